/**
 * Who is calling: the admin (credential made at first start, or PFLEX_ADMIN_TOKEN), a registered
 * node (credential issued at registration), or nobody. Only SHA-256 digests are stored.
 */
import { existsSync, readFileSync, writeFileSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import type { Db } from './database.js';
import { digestsEqual, newSecret, sha256Hex } from '../common/secrets.js';

export const ADMIN_TOKEN_FILE = 'admin.token';
export const ADMIN_TOKEN_LENGTH_MIN = 16;
const CREDENTIAL_LENGTH_MAX = 512;

export type Caller =
  | { readonly kind: 'admin' }
  | { readonly kind: 'node'; readonly nodeId: string; readonly roles: readonly string[] };

export interface AdminCredentials {
  readonly sha256s: readonly string[];
  readonly file: string;
}

/**
 * Makes the admin credential at first start: a random secret in <dataDir>/admin.token (0600),
 * its digest in cluster_config. An operator-supplied PFLEX_ADMIN_TOKEN is accepted as well.
 */
export function ensureAdminCredential(db: Db, dataDir: string, envToken: string | undefined): AdminCredentials {
  const file = join(dataDir, ADMIN_TOKEN_FILE);
  const sha256s: string[] = [];
  if (envToken !== undefined && envToken !== '') {
    if (envToken.length < ADMIN_TOKEN_LENGTH_MIN) {
      throw new Error(`PFLEX_ADMIN_TOKEN must be at least ${ADMIN_TOKEN_LENGTH_MIN} characters`);
    }
    sha256s.push(sha256Hex(envToken));
  }
  const stored = db.prepare(`SELECT value FROM cluster_config WHERE key = 'admin_credential_sha256'`).get() as
    | { value: string }
    | undefined;
  if (stored !== undefined) {
    sha256s.push(stored.value);
  } else {
    const secret = newSecret('pfa');
    writeFileSync(file, `${secret}\n`, { mode: 0o600 });
    chmodSync(file, 0o600);
    const digest = sha256Hex(secret);
    db.prepare(`INSERT INTO cluster_config (key, value) VALUES ('admin_credential_sha256', ?)`).run(digest);
    sha256s.push(digest);
  }
  return { sha256s, file };
}

export function adminTokenFileExists(dataDir: string): boolean {
  return existsSync(join(dataDir, ADMIN_TOKEN_FILE));
}

export function readAdminTokenFile(path: string): string {
  return readFileSync(path, 'utf8').trim();
}

/** Resolves an Authorization header to a caller; undefined means anonymous or wrong. */
export function resolveCaller(db: Db, admin: AdminCredentials, authorization: string | undefined): Caller | undefined {
  if (authorization === undefined || authorization.length > CREDENTIAL_LENGTH_MAX) return undefined;
  const match = /^Bearer\s+(\S+)$/i.exec(authorization);
  if (match === null) return undefined;
  const digest = sha256Hex(match[1]!);
  if (admin.sha256s.some((known) => digestsEqual(known, digest))) return { kind: 'admin' };
  const node = db.prepare('SELECT node_id, roles FROM cluster_nodes WHERE credential_sha256 = ?').get(digest) as
    | { node_id: string; roles: string }
    | undefined;
  if (node === undefined) return undefined;
  return { kind: 'node', nodeId: node.node_id, roles: node.roles.split(',') };
}
