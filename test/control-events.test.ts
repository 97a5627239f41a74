/** Tier events as vLLM KV events over real ZeroMQ sockets: PUB frames, DEALER replay, decoded with the events index's own decoder, shapes checked against the shared fixtures. */
import test from 'ava';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { Unpackr } from 'msgpackr';
import { Dealer, Subscriber, curveKeyPair } from 'zeromq';
import { decodeEventBatch, decodeSeq, encodeSeq, SEQ_END, type BlockStored, type KvEvent } from '../protocol/vllm-events.js';
import { blockHashes } from '../connector/keys.js';
import { connectAuthenticated } from '../connector/control/auth-client.js';
import { nsOf, startControl } from './helpers/control.js';
import { blockFor, repoRoot } from './helpers/sidecar.js';

const fixture = (f: string) => JSON.parse(readFileSync(path.resolve(repoRoot, 'test', 'fixtures', 'vllm-kv-events', f), 'utf8'));
const raw = new Unpackr({ int64AsType: 'bigint', useRecords: false, mapsAsObjects: true });
const intForm = (h: Buffer) => h.readBigUInt64BE(24);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function receiveUntil(sub: Subscriber, want: (events: KvEvent[]) => boolean, deadlineMs = 5000): Promise<Buffer[][]> {
  const msgs: Buffer[][] = [];
  const events: KvEvent[] = [];
  const end = Date.now() + deadlineMs;
  while (!want(events)) {
    if (Date.now() > end) throw new Error(`timed out; got ${events.length} events`);
    const m = (await Promise.race([sub.receive(), sleep(end - Date.now()).then(() => undefined)])) as Buffer[] | undefined;
    if (!m) continue;
    msgs.push(m);
    events.push(...decodeEventBatch(m[2]!).events);
  }
  return msgs;
}

const hashesOf = (events: KvEvent[], type: string, medium: string) =>
  events.filter((e) => e.type === type && (e as BlockStored).medium === medium).flatMap((e) => (e as BlockStored).block_hashes);

test('control events - PUB frames [topic, seq, KVEventBatch] with tier media, then DEALER replay with the end marker', async (t) => {
  const r = await startControl({ eventsPub: 'tcp://127.0.0.1:0', eventsReplay: 'tcp://127.0.0.1:0' });
  t.teardown(r.stop);
  const sub = new Subscriber({ linger: 0 });
  sub.connect(r.events!.pubEndpoint);
  sub.subscribe('kvstash/');
  t.teardown(() => sub.close());
  await sleep(300); // PUB/SUB joins asynchronously
  const c = r.client();
  const ns = await c.hello(nsOf('default'));
  const keys = blockHashes(Array.from({ length: 48 }, (_, i) => i), 16);
  await c.put(ns, keys, keys.map((k) => blockFor(k, 512)));
  await r.sidecar.tiers.drain();
  await c.delete(ns, keys.slice(2));
  const all = (ms: Buffer[][]) => ms.flatMap((m) => decodeEventBatch(m[2]!).events);
  const live = await receiveUntil(sub, (ev) => hashesOf(ev, 'BlockRemoved', 'DISK').length >= 1);
  const events = all(live);
  const ints = keys.map(intForm);
  t.deepEqual(hashesOf(events, 'BlockStored', 'CPU'), ints);
  t.deepEqual(hashesOf(events, 'BlockStored', 'DISK').sort(), [...ints].sort());
  t.deepEqual(hashesOf(events, 'BlockRemoved', 'CPU'), [ints[2]]);
  t.deepEqual(hashesOf(events, 'BlockRemoved', 'DISK'), [ints[2]]);
  for (const m of live) {
    t.is(m.length, 3);
    t.is(m[0]!.toString(), `kvstash/${ns}`);
    const b = decodeEventBatch(m[2]!);
    t.is(b.data_parallel_rank, 0);
    t.true(Math.abs(b.ts - Date.now() / 1000) < 60);
  }
  const seqs = live.map((m) => decodeSeq(m[1]!)!);
  t.deepEqual(seqs, seqs.map((_, i) => BigInt(i)), 'seq starts at 0 and goes up by one per batch');

  // Replay from seq 1: a DEALER gets ["", seq8, payload] for seq >= 1, then ["", ff×8, ""].
  const d = new Dealer({ linger: 0 });
  d.connect(r.events!.replayEndpoint);
  t.teardown(() => d.close());
  await d.send([Buffer.alloc(0), encodeSeq(1n)]);
  const replayed: Buffer[][] = [];
  for (;;) {
    const m = (await d.receive()) as Buffer[];
    t.is(m.length, 3);
    t.is(m[0]!.length, 0);
    if (decodeSeq(m[1]!) === SEQ_END) {
      t.is(m[2]!.length, 0);
      break;
    }
    replayed.push(m);
  }
  t.deepEqual(replayed.map((m) => decodeSeq(m[1]!)), seqs.slice(1));
  replayed.forEach((m, i) => t.true(m[2]!.equals(live[i + 1]![2]!), 'replayed payload is byte-identical'));
  // Invalid requests are dropped without a reply, like vLLM's.
  await d.send([Buffer.from('x'), encodeSeq(0n)]);
  await d.send([Buffer.alloc(0), Buffer.alloc(3)]);
  await d.send([Buffer.alloc(0), encodeSeq(99_999n)]);
  const end = (await d.receive()) as Buffer[];
  t.is(decodeSeq(end[1]!), SEQ_END, 'only the valid request (past the buffer: just the end marker) is answered');
  t.is(r.events!.counters.replayInvalid, 2);
});

test('control events - payload shapes match the shared fixtures in map-events and array-events encodings', async (t) => {
  for (const [encoding, file] of [['map-events', 'frames-v026-map.json'], ['array-events', 'frames-v023-array.json']] as const) {
    const r = await startControl({ eventsPub: 'tcp://127.0.0.1:0', eventsEncoding: encoding });
    const sub = new Subscriber({ linger: 0 });
    try {
      sub.connect(r.events!.pubEndpoint);
      sub.subscribe('');
      await sleep(300);
      const c = r.client();
      const ns = await c.hello(nsOf('default'));
      const keys = blockHashes(Array.from({ length: 16 }, (_, i) => i), 16);
      await c.put(ns, keys, [Buffer.alloc(10)]);
      await r.sidecar.tiers.drain();
      await c.delete(ns, keys);
      const msgs = await receiveUntil(sub, (ev) => hashesOf(ev, 'BlockRemoved', 'DISK').length >= 1);
      const fx = fixture(file);
      const fxStored = fx.decoded[0].payload;
      const fxRemoved = fx.decoded[2].payload;
      const ours = msgs.map((m) => raw.unpack(m[2]!) as unknown[]);
      const stored = ours.map((p) => (p[1] as unknown[])[0]).find((e) => (Array.isArray(e) ? e[0] : (e as { type: string }).type) === 'BlockStored');
      const removed = ours.map((p) => (p[1] as unknown[])[0]).find((e) => (Array.isArray(e) ? e[0] : (e as { type: string }).type) === 'BlockRemoved');
      for (const p of ours) {
        t.true(Array.isArray(p) && p.length === 3 && typeof p[0] === 'number' && p[2] === 0, `${encoding}: envelope [ts, events, dp_rank] like the fixture`);
      }
      const fxStoredEv = fxStored[1][0];
      const fxRemovedEv = fxRemoved[1][0];
      const kind = (x: unknown) => (x === null ? 'nil' : Array.isArray(x) ? 'array' : typeof x);
      if (encoding === 'map-events') {
        const mine = Object.keys(stored as object);
        t.deepEqual(mine, Object.keys(fxStoredEv).slice(0, mine.length), 'BlockStored fields in vLLM order (defaulted trailing fields omitted)');
        t.deepEqual(mine, ['type', 'block_hashes', 'parent_block_hash', 'token_ids', 'block_size', 'lora_id', 'medium', 'lora_name']);
        t.deepEqual(Object.keys(removed as object), Object.keys(fxRemovedEv).slice(0, 3));
        t.is((stored as { medium: string }).medium, 'CPU');
      } else {
        const s = stored as unknown[];
        t.is(s.length, 8, 'tag + the 7 required BlockStored fields');
        t.deepEqual(s.map(kind), (fxStoredEv as unknown[]).slice(0, 8).map(kind), 'same positional types as the fixture');
        t.deepEqual((removed as unknown[]).map(kind), (fxRemovedEv as unknown[]).slice(0, 3).map(kind));
        t.is(s[6], 'CPU');
      }
      t.is(typeof ((Array.isArray(stored) ? stored[1] : (stored as { block_hashes: unknown[] }).block_hashes) as unknown[])[0], 'bigint', 'int-form hashes (uint64)');
    } finally {
      sub.close();
      await r.stop();
    }
  }
});

test('control events - with auth on, the event sockets are CURVE servers that admit only "*" keys', async (t) => {
  const server = curveKeyPair();
  const ops = curveKeyPair();
  const tenant = curveKeyPair();
  const r = await startControl({
    eventsPub: 'tcp://127.0.0.1:0', curveSecretKey: server.secretKey,
    curveClients: { [ops.publicKey]: '*', [tenant.publicKey]: ['a'] },
  });
  t.teardown(r.stop);
  const subscriber = (k: { publicKey: string; secretKey: string }) => {
    const s = new Subscriber({ linger: 0, curveServerKey: server.publicKey, curvePublicKey: k.publicKey, curveSecretKey: k.secretKey });
    s.connect(r.events!.pubEndpoint);
    s.subscribe('');
    return s;
  };
  const good = subscriber(ops);
  const bad = subscriber(tenant);
  t.teardown(() => { good.close(); bad.close(); });
  await sleep(400);
  const a = await connectAuthenticated(r.endpoint, { curve: { ...tenant, serverKey: server.publicKey } });
  t.teardown(() => a.client.close());
  const ns = await a.client.hello(nsOf('a'));
  await a.client.put(ns, blockHashes(Array.from({ length: 16 }, (_, i) => i), 16), [Buffer.alloc(4)]);
  const m = (await good.receive()) as Buffer[];
  t.is(decodeEventBatch(m[2]!).events[0]!.type, 'BlockStored');
  const nothing = await Promise.race([bad.receive().then(() => 'received'), sleep(500).then(() => 'nothing')]);
  t.is(nothing, 'nothing', 'a tenant-bound key cannot subscribe to every tenant\'s events');
});
