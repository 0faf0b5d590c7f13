/**
 * How the CLI reaches the MDM: --mdm or POWERFLEX_MDM_ADDRESS (default http://127.0.0.1:8001),
 * and the admin credential from --token, PFLEX_ADMIN_TOKEN, --token-file / PFLEX_ADMIN_TOKEN_FILE,
 * or the MDM's data dir (PFLEX_DATA_DIR/mdm/admin.token, default ./data/mdm/admin.token).
 */
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { HttpClient } from '../common/http-client.js';

export const MDM_ADDRESS_DEFAULT = 'http://127.0.0.1:8001';

export interface ConnectionOptions {
  mdm?: string;
  token?: string;
  tokenFile?: string;
  timeoutMs?: number;
}

export function mdmAddress(options: ConnectionOptions): string {
  const address = options.mdm ?? process.env.POWERFLEX_MDM_ADDRESS ?? MDM_ADDRESS_DEFAULT;
  return /^https?:\/\//.test(address) ? address : `http://${address}`;
}

export function adminTokenFileCandidates(options: ConnectionOptions): string[] {
  const files: string[] = [];
  if (options.tokenFile !== undefined) files.push(options.tokenFile);
  if (process.env.PFLEX_ADMIN_TOKEN_FILE) files.push(process.env.PFLEX_ADMIN_TOKEN_FILE);
  files.push(join(resolve(process.env.PFLEX_DATA_DIR ?? 'data'), 'mdm', 'admin.token'));
  return files;
}

/** The admin credential, or undefined when none is configured (the MDM then answers 401). */
export function findAdminToken(options: ConnectionOptions): string | undefined {
  if (options.token !== undefined) return options.token;
  if (process.env.PFLEX_ADMIN_TOKEN) return process.env.PFLEX_ADMIN_TOKEN;
  for (const file of adminTokenFileCandidates(options)) {
    if (existsSync(file)) return readFileSync(file, 'utf8').trim();
  }
  return undefined;
}

export function mdmClient(options: ConnectionOptions): HttpClient {
  return new HttpClient({
    baseUrl: mdmAddress(options),
    credential: findAdminToken(options),
    ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}),
  });
}
