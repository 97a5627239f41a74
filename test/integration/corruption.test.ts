/** Corruption: a stored block file with a flipped byte is served as a miss, quarantined and counted. */
import test from 'ava';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { blockHashes } from '../../connector/keys.js';
import { HEADER_BYTES } from '../../connector/storage/file.js';
import { NS, blockFor, startSidecar } from '../helpers/sidecar.js';

function blockFile(root: string, ns: string, key: Buffer): string {
  const hex = key.toString('hex');
  return path.join(root, 'v1', ns, hex.slice(0, 2), `${hex}.kvb`);
}

test('corruption - a flipped byte in a stored block is a miss, quarantined and counted', async (t) => {
  // DRAM smaller than one block: every read comes from the file tier.
  const r = await startSidecar({ dramBytes: '64KiB' });
  t.teardown(r.stop);
  const c = r.client();
  const ns = await c.hello(NS);
  const keys = blockHashes(Array.from({ length: 3 * 16 }, (_, i) => i), 16);
  await c.put(ns, keys, keys.map((k) => blockFor(k, 100_000)));
  await r.sidecar.tiers.drain();
  const root = r.sidecar.config.fileRoot;
  const f = blockFile(root, ns, keys[1]!);
  const bytes = readFileSync(f);
  bytes[HEADER_BYTES + 5000]! ^= 0x01;
  writeFileSync(f, bytes);

  const got = await c.get(ns, keys);
  t.true(got[0]!.equals(blockFor(keys[0]!, 100_000)));
  t.is(got[1], undefined, 'the corrupted block is not served');
  t.true(got[2]!.equals(blockFor(keys[2]!, 100_000)));
  const file = r.sidecar.tiers.stats().find((x) => x.name === 'file')!;
  t.is(file.checksumFailures, 1);
  await r.sidecar.tiers.drain(); // the quarantine move runs behind the read
  t.deepEqual(readdirSync(path.join(root, 'quarantine')), [`${ns}-${keys[1]!.toString('hex')}.kvb`]);
  t.is((await c.lookup(ns, keys)).hit, 1, 'the chain now ends before the bad block');
  t.deepEqual((await c.exists(ns, keys)).exists, [true, false, true]);
});

test('corruption - a block damaged while the sidecar was down is caught on the first read after restart', async (t) => {
  const r = await startSidecar({ dramBytes: '16MiB' });
  const c = r.client();
  const ns = await c.hello(NS);
  const keys = blockHashes(Array.from({ length: 2 * 16 }, (_, i) => i + 7), 16);
  await c.put(ns, keys, keys.map((k) => blockFor(k, 50_000)));
  await r.sidecar.tiers.drain();
  const root = r.sidecar.config.fileRoot;
  await r.sidecar.stop();
  const f = blockFile(root, ns, keys[0]!);
  const bytes = readFileSync(f);
  bytes[bytes.length - 1]! ^= 0x80;
  writeFileSync(f, bytes);

  const { Sidecar } = await import('../../connector/server/sidecar.js');
  const again = new Sidecar({ ...r.sidecar.config });
  await again.start();
  t.teardown(async () => { await again.stop(); await r.stop().catch(() => undefined); });
  const { KvstashClient } = await import('../../connector/client.js');
  const c2 = new KvstashClient(again.endpoints[0]!, { timeoutMs: 5000 });
  t.teardown(() => c2.close());
  const ns2 = await c2.hello(NS);
  t.is(ns2, ns);
  const got = await c2.get(ns2, keys);
  t.is(got[0], undefined);
  t.true(got[1]!.equals(blockFor(keys[1]!, 50_000)));
  t.is(again.tiers.stats()[1]!.checksumFailures, 1);
});
