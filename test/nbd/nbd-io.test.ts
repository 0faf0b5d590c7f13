/**
 * The transmission phase with real clients (nbd/transmission.ts): qemu-io patterns at aligned and
 * unaligned offsets, write zeroes, discard, FUA and flush; qemu-img convert and nbdcopy round trips
 * (nbdcopy uses several connections, trusting CAN_MULTI_CONN); nbdinfo --map over base:allocation;
 * a read-only export; fio's nbd engine with crc32c verification at queue depth 32.
 */
import t, { type Test } from 'tap';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MemoryExport } from '../helpers/nbd-memory-export.js';
import { missingTools, runTool, startMemoryNbdServer, type ToolResult } from '../helpers/nbd-tools.js';

const KiB = 1024;
const MiB = 1024 * KiB;

const missing = await missingTools(['qemu-io', 'qemu-img', 'nbdinfo', 'nbdcopy', 'fio']);
if (missing.length > 0) {
  t.plan(0, `real NBD clients missing: ${missing.join(', ')}`);
} else {
  const disk = new MemoryExport({ name: 'disk', sizeBytes: 32 * MiB });
  const copy = new MemoryExport({ name: 'copy', sizeBytes: 8 * MiB });
  const map = new MemoryExport({ name: 'map', sizeBytes: 16 * MiB, granularityBytes: 64 * KiB });
  const ro = new MemoryExport({ name: 'ro', sizeBytes: MiB, readOnly: true });
  // A 1 ms service time keeps requests in the export long enough to see them overlap.
  const fioDisk = new MemoryExport({ name: 'fio', sizeBytes: 64 * MiB, delayMs: () => 1 });
  ro.data.fill(0x5a);
  const nbd = await startMemoryNbdServer([disk, copy, map, ro, fioDisk]);
  const scratch = mkdtempSync(join(tmpdir(), 'pflex-nbd-io-'));
  t.teardown(async () => {
    await nbd.close();
    rmSync(scratch, { recursive: true, force: true });
  });

  const qemuIo = (name: string, commands: string[], extra: string[] = []): Promise<ToolResult> =>
    runTool('qemu-io', ['-f', 'raw', ...extra, nbd.uri(name), ...commands.flatMap((command) => ['-c', command])]);

  const expectOk = (t: Test, result: ToolResult, what: string): void => {
    t.equal(result.code, 0, `${what} exits 0`);
    if (result.code !== 0) t.comment(result.stdout + result.stderr);
  };

  t.test('qemu-io writes patterns at aligned and unaligned offsets and reads them back', async (t) => {
    const end = disk.sizeBytes;
    const writes: [number, number, number][] = [
      [0xab, 1000, 3000], // unaligned start and end, inside one 4 KiB block
      [0xcd, 4095, 2], // straddles a block boundary
      [0x11, 65536, 65536], // aligned
      [0x22, 1 * MiB + 7, 300 * KiB + 3], // long and unaligned
      [0x33, end - 512, 512], // the export's last sector
    ];
    const result = await qemuIo(
      'disk',
      writes.flatMap(([pattern, offset, length]) => [`write -P 0x${pattern.toString(16)} ${offset} ${length}`, `read -P 0x${pattern.toString(16)} ${offset} ${length}`]),
    );
    expectOk(t, result, 'qemu-io');
    t.notMatch(result.stdout + result.stderr, /Pattern verification failed|error/i);
    for (const [pattern, offset, length] of writes) {
      t.ok(disk.data.subarray(offset, offset + length).every((byte) => byte === pattern), `export holds 0x${pattern.toString(16)} at ${offset}+${length}`);
    }
    t.equal(disk.data[999], 0, 'the byte before the first write is untouched');
    t.equal(disk.data[4000], 0, 'the byte after it too');

    const beyond = await qemuIo('disk', [`write -P 0x44 ${end - 256} 512`]);
    t.match(beyond.stdout + beyond.stderr, /Input\/output error|Invalid argument|No space|out of range|beyond/i, 'writing past the end fails');
    t.equal(disk.data[end - 1], 0x33, 'and changes nothing');
  });

  t.test('qemu-io write -z, discard, FUA and flush', async (t) => {
    const flushesBefore = disk.calls.flush;
    const fuaBefore = disk.fuaCount;
    const result = await qemuIo('disk', [
      'write -P 0x77 2M 1M',
      'write -z 2M 256k',
      'read -P 0 2M 256k',
      'read -P 0x77 2304k 768k',
      'write -z -u 2560k 256k',
      'read -P 0 2560k 256k',
      'discard 2816k 256k',
      'write -f -P 0x78 3M 4k',
      'read -P 0x78 3M 4k',
      'flush',
    ]);
    expectOk(t, result, 'qemu-io');
    t.notMatch(result.stdout + result.stderr, /Pattern verification failed|error/i);
    t.ok(disk.calls.writeZeroes >= 2, 'write -z reached the export as WRITE_ZEROES');
    t.ok(disk.calls.trim >= 1, 'discard reached the export as TRIM');
    t.ok(disk.fuaCount > fuaBefore, 'write -f carried FUA');
    t.ok(disk.calls.flush > flushesBefore, 'flush reached the export');
    t.ok(disk.data.subarray(2816 * KiB, 3 * MiB).every((byte) => byte === 0), 'the discarded range reads as zeroes here');
  });

  t.test('qemu-img convert into the export and back out', async (t) => {
    const source = randomBytes(copy.sizeBytes);
    source.fill(0, 3 * MiB, 4 * MiB); // a zero run for qemu-img to turn into write-zeroes
    const sourcePath = join(scratch, 'source.img');
    const outPath = join(scratch, 'out.img');
    writeFileSync(sourcePath, source);
    expectOk(t, await runTool('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', sourcePath, nbd.uri('copy')], { timeoutMs: 30_000 }), 'convert in');
    t.ok(copy.data.equals(source), 'the export holds the file');
    expectOk(t, await runTool('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', nbd.uri('copy'), outPath], { timeoutMs: 30_000 }), 'convert out');
    t.ok(readFileSync(outPath).equals(source), 'the file read back is identical');
    const compare = await runTool('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', sourcePath, nbd.uri('copy')]);
    t.equal(compare.code, 0, 'qemu-img compare agrees');
  });

  t.test('nbdcopy in both directions over several connections', async (t) => {
    const source = randomBytes(copy.sizeBytes);
    source.fill(0, 5 * MiB, 6 * MiB);
    const sourcePath = join(scratch, 'nbdcopy-source.img');
    const outPath = join(scratch, 'nbdcopy-out.img');
    writeFileSync(sourcePath, source);
    const connectionsBefore = nbd.provider.opened.length;
    expectOk(t, await runTool('nbdcopy', ['--connections=4', '--requests=16', sourcePath, nbd.uri('copy')], { timeoutMs: 30_000 }), 'nbdcopy in');
    t.ok(nbd.provider.opened.length - connectionsBefore >= 2, 'nbdcopy opened several connections (CAN_MULTI_CONN)');
    t.ok(copy.data.equals(source), 'the export holds the file');
    expectOk(t, await runTool('nbdcopy', [nbd.uri('copy'), outPath], { timeoutMs: 30_000 }), 'nbdcopy out');
    t.ok(readFileSync(outPath).equals(source), 'the file read back is identical');
  });

  t.test('nbdinfo --map shows base:allocation after writes, zeroes and trims', async (t) => {
    const prepared = await qemuIo('map', ['write -P 0x01 0 1M', 'write -z 2M 1M', 'write -P 0x02 4M 2M', 'discard 5M 512k', 'write -P 0x03 15M 1M']);
    expectOk(t, prepared, 'qemu-io');
    const result = await runTool('nbdinfo', ['--map', '--json', nbd.uri('map')]);
    expectOk(t, result, 'nbdinfo --map');
    const extents = (JSON.parse(result.stdout) as { offset: number; length: number; type: number }[]).map(({ offset, length, type }) => ({ offset, length, type }));
    t.same(extents, [
      { offset: 0, length: 1 * MiB, type: 0 }, // data
      { offset: 1 * MiB, length: 1 * MiB, type: 3 }, // hole, zero
      { offset: 2 * MiB, length: 1 * MiB, type: 2 }, // zeroed but allocated (qemu-io write -z sends NO_HOLE)
      { offset: 3 * MiB, length: 1 * MiB, type: 3 },
      { offset: 4 * MiB, length: 1 * MiB, type: 0 },
      { offset: 5 * MiB, length: 512 * KiB, type: 3 }, // trimmed
      { offset: 5 * MiB + 512 * KiB, length: 512 * KiB, type: 0 },
      { offset: 6 * MiB, length: 9 * MiB, type: 3 },
      { offset: 15 * MiB, length: 1 * MiB, type: 0 },
    ]);
    const totals = await runTool('nbdinfo', ['--map', '--totals', nbd.uri('map')]);
    t.match(totals.stdout, /3670016\s+21\.9%\s+0 data/, '--totals adds up the data extents');
  });

  t.test('a read-only export refuses writes and still reads', async (t) => {
    const info = JSON.parse((await runTool('nbdinfo', ['--json', nbd.uri('ro')])).stdout) as { exports: { is_read_only: boolean }[] };
    t.equal(info.exports[0]?.is_read_only, true, 'nbdinfo: is_read_only');
    const write = await qemuIo('ro', ['write -P 0x01 0 4k']);
    t.not(write.code, 0, 'qemu-io cannot write');
    t.match(write.stdout + write.stderr, /Permission denied|Operation not permitted|read-only/i);
    const copyIn = await runTool('nbdcopy', [join(scratch, 'source.img'), nbd.uri('ro')]);
    t.not(copyIn.code, 0, 'nbdcopy cannot write either');
    t.ok(ro.data.every((byte) => byte === 0x5a), 'the export is unchanged');
    t.equal(ro.calls.write + ro.calls.trim + ro.calls.writeZeroes, 0, 'no write reached it');
    expectOk(t, await qemuIo('ro', ['read -P 0x5a 0 1M'], ['-r']), 'qemu-io -r reads');
  });

  t.test('fio nbd engine: 4k randrw, iodepth 32, crc32c verify', async (t) => {
    const result = await runTool(
      'fio',
      [
        '--name=nbd-verify',
        '--ioengine=nbd',
        `--uri=${nbd.uri('fio')}`,
        '--rw=randrw',
        '--bs=4k',
        '--iodepth=32',
        '--size=32m',
        '--verify=crc32c',
        '--do_verify=1',
        '--verify_fatal=1',
        '--verify_state_save=0',
        '--output-format=json',
      ],
      { timeoutMs: 60_000, cwd: scratch },
    );
    expectOk(t, result, 'fio');
    const report = JSON.parse(result.stdout.slice(result.stdout.indexOf('{'))) as {
      jobs: { error: number; read: { io_bytes: number }; write: { io_bytes: number } }[];
    };
    const [job] = report.jobs;
    t.equal(job?.error, 0, 'no fio errors');
    t.ok((job?.write.io_bytes ?? 0) > 0, 'it wrote');
    t.ok((job?.read.io_bytes ?? 0) > 0, 'it read (and verified)');
    t.ok(fioDisk.activeCallsMax > 1, `requests ran concurrently (max ${fioDisk.activeCallsMax} at once)`);
  });
}
