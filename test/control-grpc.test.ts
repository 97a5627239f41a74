/** The gRPC control plane against a real sidecar and a real gRPC server on port 0: every method, bad input, deadlines, slow consumers. */
import test from 'ava';
import * as grpc from '@grpc/grpc-js';
import { blockHashes, namespaceId } from '../connector/keys.js';
import { CODE_KEY, fromServiceError, grpcStatusOf, toServiceError } from '../connector/control/status.js';
import { MemoryDriver } from '../connector/storage/memory.js';
import { defaultRegistry } from '../connector/storage/registry.js';
import { ErrorCode, KvstashError } from '../protocol/errors.js';
import { startControl, nsOf, type ControlRunning } from './helpers/control.js';
import { blockFor } from './helpers/sidecar.js';

const NS = nsOf('default');
const tokens = (n: number, seed = 0) => Array.from({ length: n * 16 }, (_, i) => i + seed * 1_000_000);

async function seed(r: ControlRunning, n: number, size = 4096, s = 0): Promise<{ ns: string; keys: Buffer[]; toks: number[] }> {
  const c = r.client();
  const ns = await c.hello(NS);
  const toks = tokens(n, s);
  const keys = blockHashes(toks, 16);
  for (let i = 0; i < keys.length; i += 256) await c.put(ns, keys.slice(i, i + 256), keys.slice(i, i + 256).map((k) => blockFor(k, size)));
  await r.sidecar.tiers.drain();
  return { ns, keys, toks };
}

async function rejects(t: { is: (a: unknown, b: unknown, m?: string) => void; fail: (m: string) => void }, p: Promise<unknown>, code: string, status: grpc.status): Promise<KvstashError> {
  try {
    await p;
  } catch (err) {
    const e = err as KvstashError;
    t.is(e.code, code, e.message);
    t.is((e.cause as grpc.ServiceError | undefined)?.code, status, `gRPC status for ${code}`);
    return e;
  }
  t.fail(`expected ${code}`);
  throw new Error('unreachable');
}

test('control grpc - every kvstash code maps to one gRPC status and back through the metadata', (t) => {
  for (const code of Object.values(ErrorCode)) {
    const st = grpcStatusOf(code);
    t.not(st, grpc.status.UNKNOWN, code);
    t.not(st, grpc.status.OK, code);
    const se = toServiceError(new KvstashError(code, 'boom'));
    t.is(se.code, st);
    t.is(se.metadata!.get(CODE_KEY)[0], code);
    const back = fromServiceError(Object.assign(new Error(se.details), { code: se.code, details: se.details, metadata: se.metadata }));
    t.is(back.code, code);
    t.is(back.message, 'boom');
  }
  t.is(fromServiceError({ code: grpc.status.DEADLINE_EXCEEDED, details: 'Deadline exceeded', metadata: new grpc.Metadata() }).code, ErrorCode.TIMEOUT);
  t.is(fromServiceError({ code: grpc.status.UNAVAILABLE, details: 'down', metadata: new grpc.Metadata() }).code, ErrorCode.UNAVAILABLE);
});

test('control grpc - Lookup by token ids, by hashes, by id or descriptor: leading blocks per tier and load estimates', async (t) => {
  const r = await startControl();
  t.teardown(r.stop);
  const { ns, keys, toks } = await seed(r, 6);
  // Drop the first two blocks' DRAM copies: they are then served by the file tier.
  for (const k of keys.slice(0, 2)) t.is(r.sidecar.tiers.evictFrom(`${ns}/${k.toString('hex')}`, 0), 'evicted');
  const g = r.control();
  const a = await g.lookup({ namespace: { descriptor: NS }, prefix: { tokens: { ids: [...toks, 1, 2, 3], block_size: 16 } } });
  t.is(a.namespace_id, namespaceId(NS));
  t.is(a.blocks, 6);
  t.is(a.hit_blocks, 6);
  const byTier = Object.fromEntries((a.tiers as { tier: string; blocks: number; load_ms: number; medium: string }[]).map((x) => [x.tier, x]));
  t.is(byTier.dram!.blocks, 4);
  t.is(byTier.file!.blocks, 2);
  t.is(byTier.file!.medium, 'DISK');
  t.true(byTier.file!.load_ms > 0);
  const b = await g.lookup({ namespace: { id: ns }, prefix: { hashes: { hashes: [...keys.slice(0, 3), blockHashes(tokens(1, 9), 16)[0]!, keys[4]!] } } });
  t.is(b.hit_blocks, 3, 'a missing block ends the leading run');
  const other = await g.lookup({ namespace: { descriptor: { ...NS, model: 'other' } }, prefix: { tokens: { ids: toks, block_size: 16 } } });
  t.is(other.hit_blocks, 0, 'another namespace never matches');
});

test('control grpc - bad arguments are refused with INVALID_ARGUMENT / NOT_FOUND and the kvstash code', async (t) => {
  const r = await startControl();
  t.teardown(r.stop);
  const g = r.control();
  const toks = { tokens: { ids: tokens(1), block_size: 16 } };
  await rejects(t, g.lookup({ prefix: toks }), ErrorCode.INVALID_ARGUMENT, grpc.status.INVALID_ARGUMENT);
  await rejects(t, g.lookup({ namespace: { id: 'f'.repeat(32) }, prefix: toks }), ErrorCode.NS_UNKNOWN, grpc.status.NOT_FOUND);
  await rejects(t, g.lookup({ namespace: { id: 'nothex' }, prefix: toks }), ErrorCode.INVALID_ARGUMENT, grpc.status.INVALID_ARGUMENT);
  await rejects(t, g.lookup({ namespace: { descriptor: NS }, prefix: { hashes: { hashes: [Buffer.alloc(31)] } } }), ErrorCode.KEY_LENGTH, grpc.status.INVALID_ARGUMENT);
  await rejects(t, g.lookup({ namespace: { descriptor: NS }, prefix: { tokens: { ids: [1], block_size: 0 } } }), ErrorCode.INVALID_ARGUMENT, grpc.status.INVALID_ARGUMENT);
  await rejects(t, g.lookup({ namespace: { descriptor: { ...NS, tp_rank: 3 } }, prefix: toks }), ErrorCode.INVALID_ARGUMENT, grpc.status.INVALID_ARGUMENT);
  await rejects(t, g.pin({ selector: { tenant: 'default' }, tag: '' }), ErrorCode.INVALID_ARGUMENT, grpc.status.INVALID_ARGUMENT);
  await rejects(t, g.evict({ selector: {} }), ErrorCode.INVALID_ARGUMENT, grpc.status.INVALID_ARGUMENT);
  await rejects(t, g.evict({ selector: { tenant: 'default' }, tier: 'tape' }), ErrorCode.INVALID_ARGUMENT, grpc.status.INVALID_ARGUMENT);
  const clear = g.stream('Clear', { selector: { namespace: { descriptor: NS }, prefix: toks } });
  await rejects(t, (async () => { for await (const _ of clear.messages) void _; })(), ErrorCode.INVALID_ARGUMENT, grpc.status.INVALID_ARGUMENT);
  const move = g.stream('Move', { selector: { tenant: 'default' }, to_tier: 'nowhere' });
  await rejects(t, (async () => { for await (const _ of move.messages) void _; })(), ErrorCode.INVALID_ARGUMENT, grpc.status.INVALID_ARGUMENT);
  const watch = g.stream('WatchTierEvents', { kinds: ['exploded'] });
  await rejects(t, (async () => { for await (const _ of watch.messages) void _; })(), ErrorCode.INVALID_ARGUMENT, grpc.status.INVALID_ARGUMENT);
  // Raw bytes that are not a LookupRequest: gRPC's own deserialisation error, and the server keeps serving.
  const raw = await new Promise<grpc.ServiceError | null>((resolve) => {
    g.raw.makeUnaryRequest('/kvstash.v1.Control/Lookup', (b: Buffer) => b, (b: Buffer) => b, Buffer.from([0x0a, 0xff, 0xff]), (err) => resolve(err));
  });
  t.truthy(raw);
  t.is((await g.health()).status, 'SERVING');
});

test('control grpc - Stats mirrors the tier stack; Health probes every tier', async (t) => {
  const r = await startControl();
  t.teardown(r.stop);
  const { ns, keys } = await seed(r, 5, 1000);
  await r.client().get(ns, [...keys.slice(0, 3), blockHashes(tokens(1, 7), 16)[0]!]);
  const g = r.control();
  const st = await g.stats();
  t.is(st.blocks, 5);
  t.is(st.namespaces, 1);
  const mine = r.sidecar.tiers.stats();
  for (const [i, tier] of (st.tiers as Record<string, number | string>[]).entries()) {
    t.is(tier.name, mine[i]!.name);
    t.is(tier.bytes, mine[i]!.bytes);
    t.is(tier.blocks, mine[i]!.blocks);
    t.is(tier.hits, mine[i]!.hits);
    t.is(tier.misses, mine[i]!.misses);
  }
  t.is(st.tiers[0].hits, 3);
  t.is(st.tiers[0].misses, 1);
  t.is(st.tiers[1].blocks, 5);
  t.is(st.pins.budget_bytes, 32 * 2 ** 20, 'default pin budget: half of DRAM');
  const h = await g.health();
  t.is(h.status, 'SERVING');
  t.deepEqual((h.tiers as { name: string; ok: boolean }[]).map((x) => [x.name, x.ok]), [['dram', true], ['file', true]]);
  t.deepEqual(h.endpoints, [r.endpoint]);
});

test('control grpc - Health is DEGRADED while a lower tier fails its probe', async (t) => {
  let broken = false;
  const registry = defaultRegistry().register({
    name: 'flaky',
    parseConfig: (raw) => raw,
    create: () => {
      const d = new MemoryDriver();
      const has = d.has.bind(d);
      d.has = async (k: string) => {
        if (broken) throw new KvstashError(ErrorCode.STORAGE, 'backend unreachable');
        return has(k);
      };
      return d;
    },
  });
  const r = await startControl({ tiers: [{ name: 'remote', driver: 'flaky', budget: '1MiB', medium: 'S3' }] }, registry);
  t.teardown(r.stop);
  const g = r.control();
  t.is((await g.health()).status, 'SERVING');
  broken = true;
  const h = await g.health();
  t.is(h.status, 'DEGRADED');
  t.like((h.tiers as Record<string, unknown>[])[1], { name: 'remote', ok: false, error: 'backend unreachable' });
});

test('control grpc - Pin keeps blocks through DRAM pressure, is bounded by the budget, Unpin works by tag', async (t) => {
  const r = await startControl({ dramBytes: '1MiB', pinBudgetBytes: '300KiB' });
  t.teardown(r.stop);
  const { ns, keys, toks } = await seed(r, 4, 64 * 1024);
  const g = r.control();
  const sel = { namespace: { id: ns }, prefix: { tokens: { ids: toks, block_size: 16 } } };
  const p = await g.pin({ selector: sel, tag: 'session:1' });
  t.like(p, { pinned: 4, missing: 0, added_bytes: 4 * 65536 });
  t.like(p.pins, { blocks: 4, bytes: 4 * 65536, tags: 1 });
  // Same blocks under a second tag: no new bytes.
  t.like(await g.pin({ selector: sel, tag: 'tenant:default' }), { pinned: 4, added_bytes: 0 });
  // Fill DRAM many times over with other blocks: the pinned ones stay in DRAM.
  await seed(r, 40, 64 * 1024, 5);
  for (const k of keys) t.truthy(r.sidecar.tiers.entry(`${ns}/${k.toString('hex')}`)!.where & 1, 'pinned block still in DRAM');
  // Budget: 4 more blocks (256 KiB) would exceed 300 KiB → nothing pinned.
  const more = blockHashes(tokens(45, 5), 16).slice(0, 4);
  const e = await rejects(t, g.pin({ selector: { namespace: { id: ns }, prefix: { hashes: { hashes: more } } }, tag: 'x' }), ErrorCode.RESOURCE_EXHAUSTED, grpc.status.RESOURCE_EXHAUSTED);
  t.regex(e.message, /pin budget/);
  t.is((await g.stats()).pins.blocks, 4);
  t.like(await g.unpin({ tag: 'session:1' }), { unpinned: 4 });
  t.is((await g.stats()).pins.blocks, 4, 'still pinned by the other tag');
  t.like(await g.unpin({ tag: 'tenant:default', selector: { namespace: { id: ns }, prefix: { hashes: { hashes: keys.slice(0, 1) } } } }), { unpinned: 1 });
  t.like((await g.unpin({ tag: 'tenant:default' })).pins, { blocks: 0, bytes: 0, tags: 0 });
  t.like(await g.unpin({ tag: 'never' }), { unpinned: 0 });
});

test('control grpc - Evict drops one tier or all, keeps pinned blocks; Clear streams progress for a namespace and a tenant', async (t) => {
  const r = await startControl();
  t.teardown(r.stop);
  const { ns, keys } = await seed(r, 10, 2048);
  const g = r.control();
  const first = { namespace: { id: ns }, prefix: { hashes: { hashes: keys.slice(0, 2) } } };
  await g.pin({ selector: { namespace: { id: ns }, prefix: { hashes: { hashes: keys.slice(9) } } }, tag: 'keep' });
  t.like(await g.evict({ selector: first, tier: 'dram' }), { evicted: 2, pinned: 0, missing: 0 });
  t.like(await g.evict({ selector: first, tier: 'dram' }), { evicted: 0, missing: 2 });
  const c = r.client();
  t.is((await c.lookup(ns, keys)).tiers.file, 2, 'evicted from DRAM only: still in the file tier');
  t.like(await g.evict({ selector: { namespace: { id: ns }, prefix: { hashes: { hashes: keys.slice(8) } } } }), { evicted: 1, pinned: 1 });
  t.is((await c.exists(ns, keys.slice(8))).exists.join(), 'false,true');
  // Clear the namespace: pinned block kept unless include_pinned.
  const s1 = g.stream('Clear', { selector: { namespace: { id: ns } } });
  const msgs: Record<string, number | boolean>[] = [];
  for await (const m of s1.messages) msgs.push(m);
  t.like(msgs.at(-1), { total: 9, done: 9, changed: 8, skipped: 1, finished: true });
  t.is(msgs[0]!.done, 0);
  const s2 = g.stream('Clear', { selector: { tenant: 'default' }, include_pinned: true });
  let last: Record<string, unknown> = {};
  for await (const m of s2.messages) last = m;
  t.like(last, { total: 1, changed: 1, finished: true });
  t.is(r.sidecar.tiers.index.size, 0);
  t.is((await g.stats()).pins.blocks, 0, 'pins went with the cleared blocks');
});

test('control grpc - Move demotes DRAM → file (bytes intact) and warms file → DRAM, with progress', async (t) => {
  const r = await startControl({ fileWriteMode: 'back' });
  t.teardown(r.stop);
  const { ns, keys } = await seed(r, 20, 8192);
  const g = r.control();
  const sel = { namespace: { id: ns } };
  const tiersOf = () => keys.map((k) => r.sidecar.tiers.entry(`${ns}/${k.toString('hex')}`)!.where);
  t.true(tiersOf().every((w) => w === 1), 'write-back: only in DRAM');
  let last: Record<string, unknown> = {};
  for await (const m of g.stream('Move', { selector: sel, to_tier: 'file' }).messages) last = m;
  t.like(last, { total: 20, done: 20, changed: 20, failed: 0, finished: true });
  t.true(tiersOf().every((w) => w === 2), 'demoted: only in the file tier');
  const got = await r.client().get(ns, keys.slice(0, 5));
  got.forEach((b, i) => t.true(b!.equals(blockFor(keys[i]!, 8192))));
  for (const k of keys) r.sidecar.tiers.evictFrom(`${ns}/${k.toString('hex')}`, 0);
  for await (const m of g.stream('Move', { selector: sel, to_tier: 'dram' }).messages) last = m;
  t.like(last, { total: 20, changed: 20, finished: true });
  t.true(tiersOf().every((w) => w === 3), 'warmed: DRAM and file');
  for await (const m of g.stream('Move', { selector: sel, to_tier: 'dram' }).messages) last = m;
  t.like(last, { changed: 0, skipped: 20 });
});

test('control grpc - deadlines: an expired unary call and a Move cut short by its deadline', async (t) => {
  const r = await startControl({ fileWriteMode: 'back', dramBytes: '128MiB' });
  t.teardown(r.stop);
  const { ns } = await seed(r, 3000, 16 * 1024);
  const g = r.control();
  await rejects(t, g.call('Stats', {}, -1), ErrorCode.TIMEOUT, grpc.status.DEADLINE_EXCEEDED);
  const mv = g.stream('Move', { selector: { namespace: { id: ns } }, to_tier: 'file' }, 40);
  await rejects(t, (async () => { for await (const _ of mv.messages) void _; })(), ErrorCode.TIMEOUT, grpc.status.DEADLINE_EXCEEDED);
  // The server stops moving once the deadline passed: a while later most blocks are still only in DRAM.
  await new Promise((res) => setTimeout(res, 300));
  let moved = 0;
  for (const e of r.sidecar.tiers.index.values()) if (e.where & 2) moved++;
  t.true(moved < 3000, `moved ${moved} of 3000 after the deadline`);
  await new Promise((res) => setTimeout(res, 300));
  let later = 0;
  for (const e of r.sidecar.tiers.index.values()) if (e.where & 2) later++;
  t.true(later - moved <= 8, 'no more moves after the stream ended (at most the in-flight ones)');
});

test('control grpc - WatchTierEvents streams stored/removed events; a slow consumer loses events, never stalls the sidecar', async (t) => {
  const r = await startControl({ grpcStreamBuffer: 16 });
  t.teardown(r.stop);
  const g = r.control();
  const c = r.client();
  const ns = await c.hello(NS);
  const w = g.stream('WatchTierEvents', { namespace: { id: ns } });
  await w.ready;
  const keys = blockHashes(tokens(2), 16);
  await c.put(ns, keys, keys.map((k) => blockFor(k, 100)));
  await r.sidecar.tiers.drain();
  await c.delete(ns, keys.slice(0, 1));
  const seen: Record<string, unknown>[] = [];
  for await (const e of w.messages) {
    seen.push(e);
    if (seen.length === 6) break;
  }
  w.call.cancel();
  const rows = seen.map((e) => `${e.kind}:${e.tier}:${e.medium}:${Buffer.from(e.hash as Buffer).toString('hex')}`);
  for (const k of keys) {
    t.true(rows.includes(`stored:dram:CPU:${k.toString('hex')}`));
    t.true(rows.includes(`stored:file:DISK:${k.toString('hex')}`));
  }
  t.true(rows.includes(`removed:dram:CPU:${keys[0]!.toString('hex')}`));
  t.deepEqual(seen.map((e) => e.seq), [0, 1, 2, 3, 4, 5]);

  // Slow consumer: paused client, thousands of events; the data socket keeps answering fast.
  const slow = g.stream('WatchTierEvents', {});
  await slow.ready;
  slow.call.pause();
  const many = blockHashes(tokens(3000, 3), 16);
  const t0 = performance.now();
  for (let i = 0; i < many.length; i += 500) await c.put(ns, many.slice(i, i + 500), many.slice(i, i + 500).map(() => Buffer.alloc(64)));
  await c.ping();
  t.true(performance.now() - t0 < 5000, 'PUTs and PING answered while the watcher is stalled');
  await r.sidecar.tiers.drain();
  let dropped = 0;
  let n = 0;
  slow.call.resume();
  for await (const e of slow.messages) {
    n++;
    dropped += Number(e.dropped);
    if (dropped > 0) break;
  }
  slow.call.cancel();
  t.true(dropped > 0, `the stalled stream reported dropped events (after ${n} delivered)`);
});
