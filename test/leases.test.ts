/**
 * LOOKUP leases (connector/server/leases.ts): the leading hits of a LOOKUP with `lease`/`lease_ms` are pinned until
 * released (`lease_ms: 0`) or expired; bad lease fields are KVS_BAD_FIELD. Real in-process sidecar and client.
 */
import { randomBytes } from 'node:crypto';
import test from 'ava';
import { NS, startSidecar } from './helpers/sidecar.js';

const until = async (cond: () => boolean, ms: number): Promise<boolean> => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 10));
  }
  return true;
};

test('leases - a LOOKUP lease pins its leading hits, renews, releases, expires; bad fields are refused', async (t) => {
  const sc = await startSidecar({ fileRoot: '' });
  t.teardown(() => sc.stop());
  const c = sc.client();
  const ns = await c.namespace(NS);
  const keys = Array.from({ length: 4 }, () => randomBytes(32));
  await c.put(ns, keys.slice(0, 3), keys.slice(0, 3).map(() => randomBytes(1024)));
  const lookup = (h: Record<string, unknown>) => c.request({ op: 'LOOKUP', ns, keys: Buffer.concat(keys), ...h });
  const r = await lookup({ lease: 'vllm:req-1', lease_ms: 60_000 });
  t.is(r.header.hit, 3);
  t.is(sc.sidecar.tiers.pinStats().blocks, 3, 'the three hits are pinned, the miss is not');
  t.is(sc.sidecar.leases.live, 1);
  await lookup({ lease: 'vllm:req-1', lease_ms: 60_000 });
  t.is(sc.sidecar.leases.live, 1, 'the same tag renews, it does not add a lease');
  await c.request({ op: 'LOOKUP', ns, keys: Buffer.alloc(0), lease: 'vllm:req-1', lease_ms: 0 });
  t.is(sc.sidecar.tiers.pinStats().blocks, 0, 'released by an empty LOOKUP with lease_ms 0');
  t.is(sc.sidecar.leases.live, 0);
  await lookup({ lease: 'vllm:req-2', lease_ms: 50 });
  t.is(sc.sidecar.tiers.pinStats().blocks, 3);
  t.true(await until(() => sc.sidecar.tiers.pinStats().blocks === 0, 5000), 'expired');
  for (const bad of [{ lease: '', lease_ms: 10 }, { lease: 'x'.repeat(129), lease_ms: 10 }, { lease: 'x', lease_ms: -1 }, { lease: 'x', lease_ms: 600_001 }, { lease: 'x' }]) {
    await t.throwsAsync(lookup(bad), { code: 'KVS_BAD_FIELD' }, JSON.stringify(bad).slice(0, 60));
  }
});
