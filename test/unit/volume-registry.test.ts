/**
 * One volume, one order (issue 10, item 8): the SDC keeps one engine per mapped volume for as
 * long as it is mapped. Extending, renaming or remapping it updates that engine in place, so NBD
 * connections opened before and after the change share its write order; unmapping closes it, and
 * a connection still open then gets EIO instead of writing through a forgotten engine.
 */
import t from 'tap';
import { createLogger } from '../../src/common/logger.js';
import { VolumeRegistry } from '../../src/sdc/volume-registry.js';
import { VolumeIoError } from '../../src/sdc/volume-engine.js';
import type { MappingRow } from '../../src/sdc/sdc-database.js';

const MiB = 1024 * 1024;
const log = createLogger('registry-test', 'silent');
const base: MappingRow = { volume_id: 12, name: 'vol-a', size_bytes: 64 * MiB, chunk_size_bytes: 4 * MiB, pool_id: 1, access_mode: 'readWrite' };

t.test('extend, rename and remap keep the engine; unmap closes it', async (t) => {
  // No MDM: plan prefetches fail quietly, which this test does not need.
  const registry = new VolumeRegistry(() => undefined, log);
  t.teardown(() => registry.close());
  registry.apply([base]);
  const engine = registry.get('vol-a');
  t.ok(engine !== undefined, 'the mapped volume has an engine');

  const extended = registry.apply([{ ...base, size_bytes: 128 * MiB }]);
  t.same(extended, { added: [], removed: [], changed: ['vol-a'] }, 'an extended volume is changed, not removed and added');
  t.equal(registry.get('vol-a'), engine, 'the same engine after the extend');
  t.equal(engine!.volume.sizeBytes, 128 * MiB, 'with the new size');

  registry.apply([{ ...base, size_bytes: 128 * MiB, name: 'vol-b' }]);
  t.equal(registry.get('vol-b'), engine, 'the same engine after a rename');
  t.equal(registry.get('vol-a'), undefined, 'the old name exports nothing');

  registry.apply([{ ...base, size_bytes: 128 * MiB, name: 'vol-b', access_mode: 'readOnly' }]);
  t.equal(registry.get('vol-b'), engine, 'the same engine after a remap to readOnly');
  const refused = await engine!.write(0, Buffer.alloc(4096), false).then(
    () => undefined,
    (error: unknown) => error,
  );
  t.ok(refused instanceof VolumeIoError && refused.errno === 'EPERM', 'and it refuses writes now', { error: String(refused) });

  const removed = registry.apply([]);
  t.same(removed.removed, ['vol-b'], 'unmapped');
  let error: unknown;
  try {
    await engine!.read(0, 4096);
  } catch (caught) {
    error = caught;
  }
  t.ok(error instanceof VolumeIoError && error.errno === 'EIO' && /no longer mapped/.test(error.message), 'a connection still holding the engine gets EIO', { error: String(error) });

  registry.apply([base]);
  t.not(registry.get('vol-a'), engine, 'mapped again: a new engine');
});
