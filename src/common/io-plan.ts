/** The IO plan of an authorize answer (docs/PROTOCOL.md §3): the MDM writes it, the SDC reads it. */

export interface PlanReplica {
  sds_id: number;
  sds_name: string;
  host: string;
  data_port: number;
  /** Present when the SDS also listens on a Unix socket: same-host SDCs may use it. */
  data_socket_path?: string;
  /** Being rebuilt: a write target (every write must reach it) but never read from. */
  rebuilding?: boolean;
}

export interface PlanChunk {
  index: number;
  /** False for a thin chunk never written: reads return zeros without asking any SDS. */
  placed: boolean;
  epoch: number;
  replicas: PlanReplica[];
}
