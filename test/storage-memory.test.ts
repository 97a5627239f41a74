import test from 'ava';
import { checksum } from '../connector/checksum.js';
import { driverConformance } from '../connector/storage/conformance.js';
import { MemoryDriver, memoryDriverFactory } from '../connector/storage/memory.js';

// An in-process store: no child process can reach it and no second instance sees it.
driverConformance(test, () => new MemoryDriver({ maxValueBytes: 72 * 2 ** 20 }), { prefix: 'storage-memory', skip: ['crash-mid-put', 'persistence'] });

test('storage-memory - sync fast path shares state with the async API and counts bytes', async (t) => {
  const d = new MemoryDriver();
  await d.open();
  const k = `${'a'.repeat(32)}/${'b'.repeat(64)}`;
  const v = Buffer.from('hello');
  d.putSync(k, v, { checksum: checksum(v) });
  t.is((await d.get(k))?.value, v, 'the buffer is kept, not copied (ownership rule)');
  t.is(d.stats().bytes, 5);
  t.true(d.deleteSync(k));
  t.is(d.stats().bytes, 0);
  t.false(await d.has(k));
});

test('storage-memory - config parser defaults and refuses bad limits with KVS_CONFIG', (t) => {
  t.is(memoryDriverFactory.parseConfig({}).maxValueBytes, 1 << 30);
  t.is((t.throws(() => memoryDriverFactory.parseConfig({ maxValueBytes: -1 })) as { code?: string } | undefined)?.code, 'KVS_CONFIG');
});
