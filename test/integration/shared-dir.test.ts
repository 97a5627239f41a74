/**
 * Several sidecar PROCESSES sharing one folder through the nfs driver (as hosts sharing an NFS export would).
 * A sidecar learns about blocks another one wrote on a LOOKUP miss: it probes the shared tier (rate-limited,
 * connector/tiers/shared-probe.ts), adopts what it finds, and serves it.
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { readdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { KvstashClient } from '../../connector/client.js';
import { NS, killAndWait, spawnSidecar, tempDir } from '../helpers/sidecar.js';

async function sidecars(t: { teardown(fn: () => unknown): void }, shared: string, count: number, dram = '8MiB') {
  const run = tempDir('kvstash-shared-run-');
  const procs: ChildProcess[] = [];
  const clients: KvstashClient[] = [];
  t.teardown(async () => {
    for (const c of clients) c.close();
    for (const p of procs) await killAndWait(p);
    rmSync(run, { recursive: true, force: true });
  });
  const tiers = JSON.stringify([{ name: 'shared', driver: 'nfs', root: shared, budget: '1GiB', fsync: false, probe: { negativeTtlMs: 200 } }]);
  const started = await Promise.all(Array.from({ length: count }, (_, i) => {
    const ep = `ipc://${path.join(run, `s${i}.sock`)}`;
    return spawnSidecar(['--endpoints', ep, '--tiers', tiers, '--dram-bytes', dram, '--log-level', 'warn'], {}, 30_000).then((s) => ({ ...s, ep }));
  }));
  for (const s of started) {
    procs.push(s.proc);
    clients.push(new KvstashClient(s.ep, { timeoutMs: 10_000 }));
  }
  return clients;
}

function countBlocks(root: string): number {
  return readdirSync(root, { recursive: true }).filter((f) => String(f).endsWith('.kvb')).length;
}

async function until<T>(fn: () => Promise<T>, ok: (v: T) => boolean, ms = 10_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (ok(v) || Date.now() > end) return v;
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('shared-dir - blocks one sidecar process writes are found, read and verified by the others after a LOOKUP miss', async (t) => {
  const shared = tempDir('kvstash-shared-');
  t.teardown(() => rmSync(shared, { recursive: true, force: true }));
  const [a, b, c] = await sidecars(t, shared, 3);
  const [nsA, nsB, nsC] = await Promise.all([a!.hello(NS), b!.hello(NS), c!.hello(NS)]);
  t.is(nsA, nsB, 'same namespace descriptor → same namespace id on every host');
  const keys = Array.from({ length: 16 }, () => randomBytes(32));
  const blocks = keys.map(() => randomBytes(200_000));
  t.is((await b!.lookup(nsB, keys)).hit, 0, 'nothing there yet');
  await a!.put(nsA, keys, blocks);
  // a's write-through to the shared folder is asynchronous; b and c see the blocks once they are published.
  const rb = await until(() => b!.lookup(nsB, keys), (r) => r.hit === 16);
  t.is(rb.hit, 16);
  t.is(rb.tiers.shared, 16, 'served from the shared tier, not DRAM');
  const got = await b!.get(nsB, keys);
  t.true(got.every((g, i) => g?.equals(blocks[i]!)), 'b read every block a wrote, checksums verified');
  t.is((await b!.lookup(nsB, keys)).tiers.dram, 16, 'and promoted them to its DRAM');
  const rc = await until(() => c!.lookup(nsC, keys.slice(0, 8)), (r) => r.hit === 8);
  t.is(rc.hit, 8);
  const stats = await b!.stats() as { tiers: { name: string; checksumFailures: number }[] };
  t.is(stats.tiers.find((x) => x.name === 'shared')!.checksumFailures, 0);
});

test('shared-dir - concurrent writers of the same blocks and a deleter on another host never produce a bad read', async (t) => {
  const shared = tempDir('kvstash-shared-');
  t.teardown(() => rmSync(shared, { recursive: true, force: true }));
  const [a, b, c] = await sidecars(t, shared, 3, '256KiB'); // small DRAM: most reads go to the shared folder
  const ns = await a!.hello(NS);
  await Promise.all([b!.hello(NS), c!.hello(NS)]);
  const keys = Array.from({ length: 24 }, () => randomBytes(32));
  const blocks = keys.map(() => randomBytes(100_000));
  await Promise.all([a!.put(ns, keys, blocks), b!.put(ns, keys, blocks)]); // two hosts save the same prefix
  await until(() => c!.lookup(ns, keys), (r) => r.hit === 24);
  const idle = async (cl: KvstashClient) => ((await cl.stats()) as { tiers: { name: string; queueDepth: number }[] }).tiers.find((x) => x.name === 'shared')!.queueDepth === 0;
  await until(async () => (await idle(a!)) && (await idle(b!)), (ok) => ok); // both writers done: deletes are not undone
  const deleted = keys.slice(8, 16);
  await until(async () => { await c!.lookup(ns, keys); return c!.delete(ns, deleted); }, (n) => n === 8);
  // DELETE answers once the index forgot them; the unlinks follow asynchronously: wait until they are done.
  await until(async () => countBlocks(shared), (n) => n === 16);
  // a and b still index the deleted blocks in the shared tier (and may hold them in DRAM): every answer is the
  // right bytes or a miss, never an error or a wrong value.
  let missesOfDeleted = 0;
  for (const cl of [a!, b!]) {
    const got = await cl.get(ns, keys);
    for (let i = 0; i < keys.length; i++) {
      if (got[i]) t.true(got[i]!.equals(blocks[i]!), `block ${i}`);
      else if (i >= 8 && i < 16) missesOfDeleted++;
      else t.fail(`block ${i} was not deleted but missed`);
    }
  }
  t.true(missesOfDeleted >= 12, `deleted blocks read as misses (${missesOfDeleted} of 16 reads; the rest came from DRAM)`);
  const fresh = Array.from({ length: 4 }, () => randomBytes(32));
  await c!.put(ns, fresh, fresh.map(() => randomBytes(1000)));
  t.is((await until(() => a!.lookup(ns, fresh), (r) => r.hit === 4)).hit, 4, 'a still learns about new blocks after the deletes');
});
