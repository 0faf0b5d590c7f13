/**
 * A real file system on a pflex volume: nbdfuse exposes the NBD export as a file, losetup makes
 * it a block device, mkfs.ext4 formats it, files are written, the file system is unmounted and
 * the whole stack torn down and rebuilt, and every file is compared; e2fsck finds it clean.
 * Needs root, FUSE and loop devices (the CI machine has them).
 */
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { run, startE2eCluster, type E2eCluster } from '../helpers/e2e-cluster.js';

const MiB = 1024 * 1024;
let e2e: E2eCluster;

t.before(async () => {
  e2e = await startE2eCluster([{ name: 'fsvol', sizeBytes: 512 * MiB, provisioning: 'thin' }]);
});
t.teardown(async () => {
  await e2e?.stop();
});

interface Stack {
  fuse: ChildProcess;
  fuseDir: string;
  loop: string;
  mountDir: string;
}

async function waitFor(check: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function must(command: string, args: string[]): Promise<string> {
  const result = await run(command, args, { timeoutMs: 120_000 });
  if (result.code !== 0) throw new Error(`${command} ${args.join(' ')}: exit ${result.code}: ${result.stderr}`);
  return result.stdout;
}

/** nbdfuse → losetup: the volume as /dev/loopN. */
async function attach(name: string): Promise<Omit<Stack, 'mountDir'>> {
  const fuseDir = join(e2e.dataDir, `fuse-${name}`);
  mkdirSync(fuseDir, { recursive: true });
  const fuse = spawn('nbdfuse', [join(fuseDir, 'disk'), e2e.uri('fsvol')], { stdio: ['ignore', 'ignore', 'pipe'] });
  await waitFor(() => existsSync(join(fuseDir, 'disk')), 15_000, 'the nbdfuse file');
  const loop = (await must('losetup', ['-f', '--show', join(fuseDir, 'disk')])).trim();
  return { fuse, fuseDir, loop };
}

async function detach(stack: Omit<Stack, 'mountDir'>): Promise<void> {
  await run('losetup', ['-d', stack.loop]);
  await run('fusermount3', ['-u', stack.fuseDir]);
  await new Promise<void>((resolve) => {
    if (stack.fuse.exitCode !== null) return resolve();
    const timer = setTimeout(() => stack.fuse.kill('SIGKILL'), 10_000);
    stack.fuse.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

const notRoot = process.getuid?.() !== 0 ? 'needs root for losetup and mount' : false;

t.test('mkfs.ext4, write, tear down, rebuild, remount, compare, e2fsck', { skip: notRoot }, async (t) => {
  const mountDir = join(e2e.dataDir, 'mnt');
  mkdirSync(mountDir, { recursive: true });
  const first = await attach('a');
  const written = new Map<string, string>();
  try {
    await must('mkfs.ext4', ['-q', '-F', first.loop]);
    await must('mount', [first.loop, mountDir]);
    try {
      for (let i = 0; i < 24; i += 1) {
        const data = randomBytes(i === 0 ? 24 * MiB : 1 + Math.floor(Math.random() * 2 * MiB));
        const name = `file-${i}.bin`;
        writeFileSync(join(mountDir, name), data);
        written.set(name, sha256(data));
      }
      mkdirSync(join(mountDir, 'nested/deeper'), { recursive: true });
      writeFileSync(join(mountDir, 'nested/deeper/note.txt'), 'pflex keeps every byte twice\n');
      written.set('nested/deeper/note.txt', sha256(Buffer.from('pflex keeps every byte twice\n')));
      await must('sync', []);
    } finally {
      await must('umount', [mountDir]);
    }
  } finally {
    await detach(first);
  }

  const second = await attach('b');
  try {
    const fsck = await run('e2fsck', ['-fn', second.loop]);
    t.equal(fsck.code, 0, `e2fsck clean: ${fsck.stdout}${fsck.stderr}`);
    await must('mount', [second.loop, mountDir]);
    try {
      for (const [name, digest] of written) {
        t.equal(sha256(readFileSync(join(mountDir, name))), digest, `${name} survived the remount`);
      }
    } finally {
      await must('umount', [mountDir]);
    }
  } finally {
    await detach(second);
  }
  const report = await e2e.pflex('--json', 'vol', 'verify', 'fsvol');
  t.equal(report.code, 0, report.stderr);
  t.equal((JSON.parse(report.stdout) as { clean: boolean }).clean, true, 'replicas identical after the file system work');
});
