/**
 * The bed SDS tests lie in: a real MDM in this process, a disk-backed temp dir for the SDS data
 * dirs, and lists of the SDS processes and data clients a test starts, all stopped (by PID) and
 * removed at teardown.
 */
import { rmSync } from 'node:fs';
import { startTestMdm, type TestMdm } from './mdm.js';
import { directTempDir, type SdsDataClient, type SdsProcess } from './sds.js';

export interface SdsBed {
  readonly dir: string;
  readonly mdm: TestMdm;
  readonly processes: SdsProcess[];
  readonly clients: SdsDataClient[];
}

export async function startSdsBed(tap: { teardown(fn: () => Promise<void>): void }, prefix: string): Promise<SdsBed> {
  const dir = directTempDir(prefix);
  const mdm = await startTestMdm();
  const bed: SdsBed = { dir, mdm, processes: [], clients: [] };
  tap.teardown(async () => {
    for (const client of bed.clients) client.close();
    await Promise.all(bed.processes.map((p) => p.stop('SIGTERM', 5000)));
    await mdm.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  return bed;
}
