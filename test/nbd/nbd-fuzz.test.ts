/**
 * Seeded garbage and mutated traffic in both phases: the server must never crash, hang or leak a
 * connection, and must keep serving well-behaved clients afterwards. NBD_FUZZ_SEED / NBD_FUZZ_ROUNDS
 * override the defaults to explore further.
 */
import t from 'tap';
import { MemoryExport } from '../helpers/nbd-memory-export.js';
import { CMD, IHAVEOPT, OPT, RawNbdClient, infoPayload, metaContextPayload, u32 } from '../helpers/nbd-raw-client.js';
import { startMemoryNbdServer } from '../helpers/nbd-tools.js';

const MiB = 1024 * 1024;
const SEED = Number(process.env.NBD_FUZZ_SEED ?? 20261123);
const ROUNDS = Number(process.env.NBD_FUZZ_ROUNDS ?? 150);

let state = SEED >>> 0 || 1;
/** xorshift32: reproducible from the seed. */
function random(): number {
  state ^= state << 13;
  state >>>= 0;
  state ^= state >>> 17;
  state ^= state << 5;
  state >>>= 0;
  return state / 0x100000000;
}
const integer = (below: number): number => Math.floor(random() * below);
const garbage = (lengthBytes: number): Buffer => Buffer.from(Array.from({ length: lengthBytes }, () => integer(256)));
function mutate(bytes: Buffer): Buffer {
  const copy = Buffer.from(bytes);
  for (let flips = 1 + integer(3); flips > 0 && copy.length > 0; flips -= 1) copy[integer(copy.length)] = integer(256);
  return copy;
}
const option = (code: number, payload: Buffer): Buffer => Buffer.concat([IHAVEOPT, u32(code), u32(payload.length), payload]);

function request(): Buffer {
  const header = Buffer.alloc(28);
  header.writeUInt32BE(0x25609513, 0);
  header.writeUInt16BE(random() < 0.7 ? 0 : integer(64), 4);
  header.writeUInt16BE(integer(10), 6);
  header.writeBigUInt64BE(BigInt(integer(1 << 30)), 8);
  header.writeBigUInt64BE(BigInt(random() < 0.9 ? integer(2 * MiB) : integer(2 ** 48)), 16);
  const lengthBytes = random() < 0.8 ? integer(70_000) : integer(2 ** 32);
  header.writeUInt32BE(lengthBytes, 24);
  const type = header.readUInt16BE(6);
  return type === CMD.WRITE && lengthBytes < 70_000 ? Buffer.concat([header, garbage(lengthBytes)]) : header;
}

const unhandled: unknown[] = [];
const onUnhandled = (reason: unknown): void => void unhandled.push(reason);
process.on('unhandledRejection', onUnhandled);
t.teardown(() => void process.off('unhandledRejection', onUnhandled));

const disk = new MemoryExport({ name: 'disk', sizeBytes: MiB });
const aligned = new MemoryExport({ name: 'aligned', sizeBytes: MiB, minimumBlockBytes: 512, maximumBlockBytes: 64 * 1024 });
const nbd = await startMemoryNbdServer([disk, aligned], { handshakeTimeoutMs: 1000, defaultName: 'disk' });
t.teardown(() => nbd.close());

t.test(`${ROUNDS} rounds of abuse (seed ${SEED})`, async (t) => {
  for (let round = 0; round < ROUNDS; round += 1) {
    const client = await RawNbdClient.negotiate(nbd.port, integer(4));
    const mode = integer(3);
    if (mode === 0) {
      client.write(garbage(integer(300)));
    } else {
      const name = random() < 0.5 ? 'disk' : 'aligned';
      const options = [
        option(OPT.STRUCTURED_REPLY, Buffer.alloc(0)),
        option(OPT.LIST, Buffer.alloc(0)),
        option(OPT.INFO, infoPayload(name, [1, 2, 3])),
        option(OPT.SET_META_CONTEXT, metaContextPayload(name, ['base:allocation'])),
        option(OPT.GO, infoPayload(name, [3])),
      ];
      for (const bytes of options) client.write(random() < 0.15 ? mutate(bytes) : bytes);
      if (mode === 2) for (let count = 0; count < 30; count += 1) client.write(random() < 0.05 ? mutate(request()) : request());
    }
    await new Promise((resolve) => setTimeout(resolve, integer(4)));
    if (random() < 0.5) client.destroy();
    else client.end();
  }
  const deadline = Date.now() + 5000;
  while (nbd.server.connections() > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 25));
  t.equal(nbd.server.connections(), 0, 'every abusive connection was cleaned up');
  t.same(unhandled, [], 'no unhandled rejections');
});

t.test('well-behaved clients are still served', async (t) => {
  const client = await RawNbdClient.negotiate(nbd.port);
  const { sizeBytes } = await client.go('disk');
  t.equal(sizeBytes, MiB);
  client.sendRequest({ type: CMD.WRITE, handle: 1n, offsetBytes: 4096 }, Buffer.alloc(4096, 0x5c));
  client.sendRequest({ type: CMD.READ, handle: 2n, offsetBytes: 4096, lengthBytes: 4096 });
  const written = await client.readSimpleReply();
  const read = await client.readSimpleReply(4096);
  t.same([written.error, written.handle, read.error, read.handle], [0, 1n, 0, 2n]);
  t.ok(read.data.equals(Buffer.alloc(4096, 0x5c)));
  client.destroy();
});
