/**
 * Real NBD clients against a real cluster (MDM, 3 SDS, SDC as processes): nbdinfo, qemu-io
 * (aligned, unaligned and chunk-straddling patterns), qemu-img convert in and out, the JSON
 * device port, a readOnly mapping, and `pflex vol verify` clean at the end.
 */
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { qemuIo, run, startE2eCluster, type E2eCluster } from '../helpers/e2e-cluster.js';

const MiB = 1024 * 1024;
let e2e: E2eCluster;

t.before(async () => {
  e2e = await startE2eCluster([
    { name: 'vol1', sizeBytes: 1024 * MiB, provisioning: 'thin' },
    { name: 'volthick', sizeBytes: 128 * MiB, provisioning: 'thick' },
    { name: 'volro', sizeBytes: 64 * MiB, provisioning: 'thin', accessMode: 'readOnly' },
  ]);
});
t.teardown(async () => {
  await e2e?.stop();
});

const qemuIoRw = (volume: string, ...commands: string[]) => qemuIo(e2e, volume, commands);
const qemuIoReadOnly = (volume: string, ...commands: string[]) => qemuIo(e2e, volume, commands, { readOnly: true });

t.test('nbdinfo sees the exports, their sizes and flags', async (t) => {
  const info = await run('nbdinfo', ['--json', e2e.uri('vol1')]);
  t.equal(info.code, 0, info.stderr);
  const vol1 = (JSON.parse(info.stdout) as { exports: Record<string, unknown>[] }).exports[0]!;
  t.equal(vol1['export-size'], 1024 * MiB);
  for (const flag of ['can_flush', 'can_fua', 'can_multi_conn', 'can_trim', 'can_zero']) t.equal(vol1[flag], true, flag);
  t.equal(vol1.is_read_only, false);
  const ro = JSON.parse((await run('nbdinfo', ['--json', e2e.uri('volro')])).stdout) as { exports: Record<string, unknown>[] };
  t.equal(ro.exports[0]!.is_read_only, true, 'a readOnly mapping is exported READ_ONLY');
  const list = await run('nbdinfo', ['--list', '--json', e2e.cluster.nbdUri]);
  t.equal(list.code, 0, list.stderr);
  const names = (JSON.parse(list.stdout) as { exports: { 'export-name': string }[] }).exports.map((e) => e['export-name']).sort();
  t.same(names, ['vol1', 'volro', 'volthick']);
  const unknown = await run('nbdinfo', [e2e.uri('no-such-volume')]);
  t.not(unknown.code, 0, 'an unmapped name is refused');
});

t.test('qemu-io patterns: aligned, unaligned, across a chunk boundary, zeroes and discard', async (t) => {
  const writes = await qemuIoRw(
    'vol1',
    'write -P 0xab 0 1M',
    'write -P 0xcd 1000 3000',
    'write -P 0x77 4190000 10000',
    'write -P 0x31 8M 64k',
    'write -z 8M 4k',
    'discard 12M 1M',
    'flush',
  );
  t.equal(writes.code, 0, writes.stderr);
  t.notMatch(writes.stdout, /error|failed/i);
  const reads = await qemuIoRw(
    'vol1',
    'read -P 0xab 0 1000',
    'read -P 0xcd 1000 3000',
    'read -P 0xab 4000 1044576',
    'read -P 0x77 4190000 10000',
    'read -P 0 8M 4k',
    'read -P 0x31 8392704 61440',
    'read -P 0 12M 1M',
    'read -P 0 900M 1M',
  );
  t.equal(reads.code, 0, reads.stderr);
  t.notMatch(reads.stdout, /Pattern verification failed|error/i, reads.stdout);
  t.equal((reads.stdout.match(/^read /gm) ?? []).length, 8, 'all eight reads verified');
});

t.test('qemu-img convert into the volume and back out', async (t) => {
  const dir = e2e.dataDir;
  const source = join(dir, 'source.img');
  const payload = randomBytes(20 * MiB);
  writeFileSync(source, payload);
  const into = await run('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', source, e2e.uri('volthick')]);
  t.equal(into.code, 0, into.stderr);
  const out = join(dir, 'out.img');
  const back = await run('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', e2e.uri('volthick'), out]);
  t.equal(back.code, 0, back.stderr);
  const copy = readFileSync(out);
  t.equal(copy.length, 128 * MiB);
  t.ok(copy.subarray(0, payload.length).equals(payload), 'the 20 MiB came back byte for byte');
  t.ok(copy.subarray(payload.length).every((byte) => byte === 0), 'the never-written rest of a thick volume reads as zeros');
});

t.test('the JSON device port speaks the seed frames', async (t) => {
  const socket = connect(e2e.cluster.spec.sdc.device, '127.0.0.1');
  const lines: string[] = [];
  let buffered = '';
  const waiters: ((line: string) => void)[] = [];
  socket.on('data', (chunk: Buffer) => {
    buffered += chunk.toString('utf8');
    for (let newline = buffered.indexOf('\n'); newline !== -1; newline = buffered.indexOf('\n')) {
      const line = buffered.slice(0, newline);
      buffered = buffered.slice(newline + 1);
      const waiter = waiters.shift();
      if (waiter !== undefined) waiter(line);
      else lines.push(line);
    }
  });
  await new Promise((resolve) => socket.once('connect', resolve));
  const call = (frame: unknown): Promise<Record<string, any>> =>
    new Promise((resolve) => {
      waiters.push((line) => resolve(JSON.parse(line)));
      socket.write(typeof frame === 'string' ? frame : `${JSON.stringify(frame)}\n`);
    });
  const connected = await call({ action: 'connect', volume_id: 'vol1' });
  t.equal(connected.ok, true);
  t.equal(connected.volume_size_bytes, 1024 * MiB);
  t.equal(connected.access_mode, 'readWrite');
  const data = Buffer.from('Hello from the seed protocol');
  const written = await call({ action: 'write', volume_id: 'vol1', offset_bytes: 50 * MiB + 7, data_b64: data.toString('base64') });
  t.same(written, { ok: true, bytes_written: data.length });
  const read = await call({ action: 'read', volume_id: 'vol1', offset_bytes: 50 * MiB + 7, length_bytes: data.length });
  t.equal(read.ok, true);
  t.equal(Buffer.from(read.data_b64, 'base64').toString(), data.toString());
  t.same(await call({ action: 'flush' }), { ok: true });
  const bad = await call('this is not json\n');
  t.equal(bad.ok, false);
  t.equal(bad.error.code, 'BAD_FRAME');
  const beyond = await call({ action: 'read', volume_id: 'vol1', offset_bytes: 1024 * MiB, length_bytes: 1 });
  t.equal(beyond.ok, false);
  t.equal(beyond.error.code, 'EINVAL');
  const unmapped = await call({ action: 'connect', volume_id: 'nope' });
  t.equal(unmapped.error.code, 'NOT_MAPPED');
  const ro = await call({ action: 'write', volume_id: 'volro', offset_bytes: 0, data_b64: data.toString('base64') });
  t.equal(ro.ok, false);
  t.equal(ro.error.code, 'EPERM', 'a readOnly mapping refuses writes on the JSON port too');
  t.same(await call({ action: 'disconnect' }), { ok: true });
  await new Promise((resolve) => socket.once('close', resolve));
  t.same(lines, [], 'no unsolicited lines');
});

t.test('a readOnly mapping refuses writes and still reads', async (t) => {
  const write = await qemuIoRw('volro', 'write -P 0x11 0 4k');
  t.not(write.code, 0, 'qemu-io cannot open a READ_ONLY export for writing');
  t.match(write.stdout + write.stderr, /Operation not permitted|read-only|Permission denied/i);
  const read = await qemuIoReadOnly('volro', 'read -P 0 0 64k');
  t.equal(read.code, 0, read.stderr);
  t.notMatch(read.stdout, /failed/i);
});

t.test('pflex vol verify: every replica of every chunk is identical', async (t) => {
  for (const volume of ['vol1', 'volthick', 'volro']) {
    const result = await e2e.pflex('--json', 'vol', 'verify', volume);
    t.equal(result.code, 0, `${volume}: ${result.stderr}`);
    const report = JSON.parse(result.stdout) as { clean: boolean; chunks_checked: number };
    t.equal(report.clean, true, `${volume} clean`);
  }
  const vol1 = JSON.parse((await e2e.pflex('--json', 'vol', 'verify', 'vol1')).stdout) as { chunks_checked: number };
  t.ok(vol1.chunks_checked >= 4, 'the written chunks of vol1 were compared');
});
