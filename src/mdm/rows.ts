/** Row shapes of powerflex.db as better-sqlite3 returns them. */

export interface PdRow {
  id: number;
  name: string;
  description: string;
  created_at: string;
}

export interface FaultSetRow {
  id: number;
  pd_id: number;
  name: string;
  created_at: string;
}

export type ProtectionPolicy = 'two_copies' | 'three_copies';

export interface PoolRow {
  id: number;
  pd_id: number;
  name: string;
  protection_policy: ProtectionPolicy;
  chunk_size_bytes: number;
  spare_percent: number;
  rebuild_rate_mbps: number;
  /** SQLite booleans: 0 stops new rebuild (or rebalance) jobs in the pool; running ones finish. */
  rebuild_enabled: 0 | 1;
  rebalance_enabled: 0 | 1;
  capacity_alert_high_percent: number;
  capacity_alert_critical_percent: number;
  created_at: string;
}

export type SdsState = 'NEW' | 'UP' | 'DOWN' | 'REMOVING';

export interface SdsRow {
  id: number;
  name: string;
  pd_id: number;
  fault_set_id: number | null;
  host: string;
  data_port: number;
  control_port: number;
  mgmt_port: number;
  /** The data port's Unix socket, for SDCs on the same host (loopback addresses only). */
  data_socket_path: string | null;
  state: SdsState;
  last_heartbeat_at_ms: number | null;
  created_at: string;
}

export interface DeviceRow {
  id: number;
  sds_id: number;
  pool_id: number;
  path: string;
  capacity_bytes: number;
  state: string;
  created_at: string;
}

export interface SdcRow {
  id: number;
  name: string;
  host: string;
  control_port: number | null;
  mgmt_port: number | null;
  nbd_port: number | null;
  state: 'NEW' | 'UP' | 'DOWN';
  last_heartbeat_at_ms: number | null;
  created_at: string;
}

export type Provisioning = 'thin' | 'thick';

export interface VolumeRow {
  id: number;
  name: string;
  pool_id: number;
  size_bytes: number;
  provisioning: Provisioning;
  created_at: string;
}

export type AccessMode = 'readWrite' | 'readOnly';

export interface MappingRow {
  id: number;
  volume_id: number;
  sdc_id: number;
  access_mode: AccessMode;
  created_at: string;
}

export interface ChunkRow {
  id: number;
  volume_id: number;
  chunk_index: number;
  epoch: number;
  generation: number;
  bytes_written: number;
  created_at: string;
}

export function copiesOf(policy: ProtectionPolicy): number {
  return policy === 'three_copies' ? 3 : 2;
}
