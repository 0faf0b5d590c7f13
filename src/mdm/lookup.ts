/** Resolving "{id}" references (a numeric id or a name) to rows, with a 404 that says what was missing. */
import type { Db } from './database.js';
import { pflexError } from '../common/errors.js';
import type { Ref } from '../common/names.js';

export const OBJECT_TABLES = {
  pd: { table: 'protection_domains', label: 'protection domain' },
  faultSet: { table: 'fault_sets', label: 'fault set' },
  pool: { table: 'storage_pools', label: 'storage pool' },
  sds: { table: 'sds', label: 'SDS' },
  sdc: { table: 'sdc', label: 'SDC' },
  volume: { table: 'volumes', label: 'volume' },
} as const;

export type ObjectKind = keyof typeof OBJECT_TABLES;

export function findRow<T>(db: Db, kind: ObjectKind, ref: Ref): T | undefined {
  const { table } = OBJECT_TABLES[kind];
  const column = typeof ref === 'number' ? 'id' : 'name';
  return db.prepare(`SELECT * FROM ${table} WHERE ${column} = ?`).get(ref) as T | undefined;
}

export function getRow<T>(db: Db, kind: ObjectKind, ref: Ref): T {
  const row = findRow<T>(db, kind, ref);
  if (row === undefined) {
    const { label } = OBJECT_TABLES[kind];
    const what = typeof ref === 'number' ? `id ${ref}` : `"${ref}"`;
    throw pflexError('NOT_FOUND', `${label} ${what} not found`, { kind, ref });
  }
  return row;
}

export function assertNameFree(db: Db, kind: ObjectKind, name: string): void {
  if (findRow(db, kind, name) !== undefined) {
    throw pflexError('NAME_TAKEN', `a ${OBJECT_TABLES[kind].label} named "${name}" already exists`, { kind, name });
  }
}
