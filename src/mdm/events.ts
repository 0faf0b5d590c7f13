/** The event log: every state change an operator would want to see later (`pflex event list`). */
import type { Db } from './database.js';

export type EventSeverity = 'info' | 'warning' | 'error';

export interface EventSubjects {
  pdId?: number;
  poolId?: number;
  volumeId?: number;
  sdsId?: number;
  sdcId?: number;
}

export const EVENTS_KEPT_MAX = 100_000;

export function recordEvent(
  db: Db,
  severity: EventSeverity,
  type: string,
  message: string,
  subjects: EventSubjects = {},
): void {
  db.prepare(
    `INSERT INTO events (severity, type, message, pd_id, pool_id, volume_id, sds_id, sdc_id)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
  ).run(
    severity,
    type,
    message,
    subjects.pdId ?? null,
    subjects.poolId ?? null,
    subjects.volumeId ?? null,
    subjects.sdsId ?? null,
    subjects.sdcId ?? null,
  );
}

export interface EventRow {
  id: number;
  at: string;
  severity: EventSeverity;
  type: string;
  message: string;
  pd_id: number | null;
  pool_id: number | null;
  volume_id: number | null;
  sds_id: number | null;
  sdc_id: number | null;
}

export function listEvents(db: Db, options: { limit: number; sinceId?: number; type?: string }): EventRow[] {
  const rows = db
    .prepare(
      `SELECT * FROM events WHERE id > ? AND (? IS NULL OR type = ?) ORDER BY id DESC LIMIT ?`,
    )
    .all(options.sinceId ?? 0, options.type ?? null, options.type ?? null, options.limit) as EventRow[];
  return rows.reverse();
}

/** Keeps the table bounded: the oldest events go first. */
export function pruneEvents(db: Db): void {
  db.prepare(`DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - ?`).run(EVENTS_KEPT_MAX);
}
