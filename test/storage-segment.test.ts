import test from 'ava';
import { existsSync, rmSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { KvstashClient } from '../connector/client.js';
import { blockHashes } from '../connector/keys.js';
import { Sidecar } from '../connector/server/sidecar.js';
import { driverConformance } from '../connector/storage/conformance.js';
import { SegmentDriver, parseSegmentConfig } from '../connector/storage/segment.js';
import { NS, blockFor, startSidecar, tempDir } from './helpers/sidecar.js';

const segModule = fileURLToPath(new URL('../connector/storage/segment.ts', import.meta.url));

driverConformance(test, () => {
  const root = tempDir('kvstash-seg-conf-');
  const config = { root, maxValueBytes: 72 * 2 ** 20, segmentBytes: 8 * 2 ** 20 };
  const make = () => new SegmentDriver(parseSegmentConfig(config));
  return {
    driver: make(), reopen: make, cleanup: () => rmSync(root, { recursive: true, force: true }),
    subprocess: { module: segModule, export: 'segmentDriverFactory', config },
  };
}, { prefix: 'storage-segment' });

test('storage-segment - the sidecar with fileLayout "segment": blocks saved, served from the log after a restart', async (t) => {
  const r = await startSidecar({ dramBytes: '64KiB', fileLayout: 'segment' });
  const c = r.client();
  const ns = await c.hello(NS);
  const keys = blockHashes(Array.from({ length: 8 * 16 }, (_, i) => i), 16);
  await c.put(ns, keys, keys.map((k) => blockFor(k, 100_000)));
  await r.sidecar.tiers.drain();
  t.is(r.sidecar.tiers.tiers[1]!.driver.name, 'segment');
  t.true(existsSync(path.join(r.sidecar.config.fileRoot, 'seg-v1')));
  await r.sidecar.stop();
  const again = new Sidecar({ ...r.sidecar.config });
  await again.start();
  t.teardown(async () => { await again.stop(); await r.stop().catch(() => undefined); });
  const c2 = new KvstashClient(again.endpoints[0]!, { timeoutMs: 5000 });
  t.teardown(() => c2.close());
  const ns2 = await c2.hello(NS);
  t.is((await c2.lookup(ns2, keys)).hit, 8);
  const got = await c2.get(ns2, keys);
  t.is(got.filter((g, i) => g?.equals(blockFor(keys[i]!, 100_000))).length, 8);
});
