/** What every MDM module gets: the database, the logger, the settings and the signing key. */
import type { Db } from './database.js';
import type { Logger } from '../common/logger.js';

export interface MdmSettings {
  readonly heartbeatIntervalMs: number;
  /** A node is DOWN after this many intervals without a heartbeat. */
  readonly heartbeatMissesMax: number;
  readonly tokenTtlMs: number;
}

export interface MdmContext {
  readonly db: Db;
  readonly log: Logger;
  readonly settings: MdmSettings;
  readonly signingKey: Buffer;
  readonly clusterId: string;
}
