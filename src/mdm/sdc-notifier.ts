/**
 * Tells SDCs that their mappings changed (map, unmap, extend, rename), so they export the change
 * at once instead of at their next heartbeat. Best effort: the push carries nothing but "pull
 * now"; an SDC that misses it catches up on its next heartbeat.
 */
import type { Db } from './database.js';
import type { Logger } from '../common/logger.js';
import { exchange } from '../common/http-client.js';

const PUSH_TIMEOUT_MS = 2000;
const PUSH_ANSWER_BYTES_MAX = 64 * 1024;

export function notifySdcs(db: Db, log: Logger, sdcIds: readonly number[]): void {
  for (const sdcId of new Set(sdcIds)) {
    const sdc = db.prepare(`SELECT name, host, control_port, state FROM sdc WHERE id = ?`).get(sdcId) as
      | { name: string; host: string; control_port: number | null; state: string }
      | undefined;
    if (sdc === undefined || sdc.control_port === null || sdc.state !== 'UP') continue;
    const host = sdc.host.includes(':') ? `[${sdc.host}]` : sdc.host;
    exchange('POST', `http://${host}:${sdc.control_port}/control/refresh`, {}, undefined, PUSH_TIMEOUT_MS, PUSH_ANSWER_BYTES_MAX)
      .catch((error: unknown) => log.debug({ sdc: sdc.name, err: (error as Error).message }, 'mapping push failed; the SDC catches up at its heartbeat'));
  }
}

export function sdcIdsOfVolume(db: Db, volumeId: number): number[] {
  return (db.prepare('SELECT sdc_id FROM volume_mappings WHERE volume_id = ?').all(volumeId) as { sdc_id: number }[]).map((row) => row.sdc_id);
}
