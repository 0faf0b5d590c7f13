/**
 * `npm start`: a whole local cluster on loopback (DESIGN §1): the MDM, three SDS in three fault
 * sets and the SDC, each its own OS process (`pflex sds --node-id sds-2` …), a protection domain,
 * a two-copy pool and a 1 GiB thin `vol1` mapped to the SDC and exported over NBD. Data lives
 * under ./data (PFLEX_DATA_DIR), logs under ./data/logs; a restart finds everything where it was.
 * Ctrl-C or SIGTERM stops every child.
 */
import { join, resolve } from 'node:path';
import { ProcessCluster } from '../src/launcher/process-cluster.js';

const DATA_DIR = resolve(process.env.PFLEX_DATA_DIR ?? 'data');
const MDM_PORT = Number(process.env.POWERFLEX_MDM_PORT ?? 8001);
const NBD_PORT = Number(process.env.POWERFLEX_SDC_NBD_PORT ?? 10809);

let cluster: ProcessCluster | undefined;
let stopping = false;

async function stopAll(exitCode: number): Promise<void> {
  if (stopping) return;
  stopping = true;
  process.stderr.write('local-cluster: stopping…\n');
  await cluster?.stop();
  process.stderr.write('local-cluster: stopped\n');
  process.exit(exitCode);
}

async function main(): Promise<void> {
  process.on('SIGINT', () => void stopAll(0));
  process.on('SIGTERM', () => void stopAll(0));
  process.stderr.write(`local-cluster: starting MDM, 3 SDS and the SDC (data in ${DATA_DIR})…\n`);
  cluster = await ProcessCluster.start({
    dataDir: DATA_DIR,
    mdmPort: MDM_PORT,
    sds: [0, 1, 2].map((n) => ({ data: 9700 + n, control: 9100 + n, mgmt: 9200 + n })),
    sdc: { nbd: NBD_PORT, device: 8005, control: 8003, mgmt: 8004 },
    onUnexpectedExit: (name, code, signal) => {
      // Ctrl-C reaches the whole process group: children that stop cleanly are stopping on purpose.
      if (code === 0 || stopping) return;
      process.stderr.write(`local-cluster: ${name} exited (code ${code}, signal ${signal}); see ${join(DATA_DIR, 'logs', `${name}.log`)}\n`);
      void stopAll(1);
    },
  });
  process.stdout.write(
    [
      '',
      `pflex local cluster is up (data in ${DATA_DIR}, logs in ${join(DATA_DIR, 'logs')})`,
      `  MDM API        ${cluster.mdmUrl}   (admin credential: ${cluster.adminTokenFile})`,
      '  topology       pd1 / fs1..fs3 / pool1 (two_copies) / sds-1..sds-3 / sdc1 / vol1 (1 GiB thin, mapped to sdc1)',
      `  NBD export     ${cluster.nbdUri}/vol1`,
      `  attach         nbd-client 127.0.0.1 ${NBD_PORT} /dev/nbd0 -N vol1      (add -C 4 for four connections)`,
      `  inspect        nbdinfo ${cluster.nbdUri}/vol1   ·   npx pflex cluster status`,
      '  stop           Ctrl-C',
      '',
    ].join('\n'),
  );
}

main().catch((error: unknown) => {
  process.stderr.write(`local-cluster: ${(error as Error).message}\n`);
  void stopAll(1);
});
