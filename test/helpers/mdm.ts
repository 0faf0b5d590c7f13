/**
 * Starts a real MDM (real HTTP on loopback, real SQLite in a temp dir) inside the test process,
 * and gives an admin client for it. API tests use this; CLI tests spawn `pflex mdm` instead.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startMdm, type RunningMdm } from '../../src/mdm/mdm-service.js';
import { createLogger } from '../../src/common/logger.js';
import { HttpClient } from '../../src/common/http-client.js';
import type { MdmSettings } from '../../src/mdm/context.js';

export interface TestMdm {
  readonly mdm: RunningMdm;
  readonly url: string;
  readonly dataDir: string;
  readonly adminToken: string;
  /** A client holding the admin credential. */
  readonly admin: HttpClient;
  /** A client with no credential. */
  readonly anonymous: HttpClient;
  stop(): Promise<void>;
}

export async function startTestMdm(settings: Partial<MdmSettings> = {}): Promise<TestMdm> {
  const dataDir = mkdtempSync(join(tmpdir(), 'pflex-mdm-test-'));
  const mdm = await startMdm({
    host: '127.0.0.1',
    port: 0,
    dataDir,
    adminToken: undefined,
    log: createLogger('mdm', 'silent'),
    settings: { heartbeatIntervalMs: 2000, heartbeatMissesMax: 3, tokenTtlMs: 30_000, ...settings },
  });
  const adminToken = readFileSync(mdm.adminTokenFile, 'utf8').trim();
  return {
    mdm,
    url: mdm.url,
    dataDir,
    adminToken,
    admin: new HttpClient({ baseUrl: mdm.url, credential: adminToken }),
    anonymous: new HttpClient({ baseUrl: mdm.url }),
    async stop() {
      await mdm.close();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
