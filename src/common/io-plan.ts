/**
 * The IO plan and lease of an authorize answer (docs/PROTOCOL.md §3), and a renewal's outcome
 * (§3.1): the MDM writes them, the SDC reads them.
 */

/** A signed token with its session key and lifetime. */
export interface LeaseGrant {
  token: string;
  token_id: string;
  session_key: string;
  issued_at: string;
  expires_at: string;
  ttl_ms: number;
}

/** A lease with the plan of its window: what an authorization answers (and a renewal that planned again). */
export interface WindowPlan extends LeaseGrant {
  chunk_first: number;
  chunk_count: number;
  chunks: PlanChunk[];
}

/**
 * One token's outcome of POST /io/renew: the lease signed again; or, when its plan changed and
 * the request asked for `replan`, a new lease with the window's new plan (as an authorization
 * answers); or why not (PLAN_CHANGED without a plan: the SDC authorizes that window itself).
 */
export type RenewOutcome =
  | (LeaseGrant & { volume_id: number })
  | { volume_id: number; replanned: WindowPlan }
  | { error: { code: string; message: string } };

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
