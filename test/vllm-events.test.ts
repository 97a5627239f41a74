import test from 'ava';
import fc from 'fast-check';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Packr } from 'msgpackr';
import {
  decodeEventBatch, decodeSeq, encodeEventBatch, encodeSeq, EVENT_ENCODINGS, hashKey, SEQ_END,
  type BlockHash, type EventEncoding, type ExtraKey, type KvEvent, type KvEventBatch,
} from '../protocol/vllm-events.js';
import { ResidencyIndex } from '../adapters/vllm/residency.js';
import { blockExtraKeys, canonicalCbor, eventInt, noneHash, vllmBlockDigests, vllmEventHashes } from '../adapters/vllm/vllm-hash.js';
import { ErrorCode, type KvstashError } from '../protocol/errors.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const fixtures = path.resolve(repoRoot, 'test', 'fixtures', 'vllm-kv-events');
const load = (f: string) => JSON.parse(readFileSync(path.join(fixtures, f), 'utf8'));
const hex = (h: string) => Buffer.from(h, 'hex');

const FRAME_FILES: Record<EventEncoding, string> = {
  'array-events': 'frames-v023-array.json',
  'map-events': 'frames-v026-map.json',
  'map-envelope': 'frames-mapenvelope.json',
};

/** The fixtures' normalized `batch` (decimal-string hashes, {bin_hex}) → KvEventBatch. */
function fromFixture(b: Record<string, unknown>): KvEventBatch {
  const h = (v: unknown): BlockHash => (typeof v === 'string' ? BigInt(v) : (v as { bin_hex: string }).bin_hex);
  const events = (b.events as Record<string, unknown>[]).map((e) => {
    const out: Record<string, unknown> = { ...e };
    if (Array.isArray(e.block_hashes)) out.block_hashes = e.block_hashes.map(h);
    if (e.parent_block_hash !== undefined) out.parent_block_hash = e.parent_block_hash === null ? null : h(e.parent_block_hash);
    return out as unknown as KvEvent;
  });
  return { ts: b.ts as number, events, data_parallel_rank: b.data_parallel_rank as number | null };
}

for (const [encoding, file] of Object.entries(FRAME_FILES) as [EventEncoding, string][]) {
  test(`vllm-events - ${file} (${encoding}) decodes to its normalized batches, topic and seq`, (t) => {
    const fx = load(file);
    t.is(fx.frames.length, 5);
    fx.frames.forEach((frames: string[], i: number) => {
      const d = fx.decoded[i];
      t.is(hex(frames[0]!).toString('utf8'), d.topic);
      t.is(decodeSeq(hex(frames[1]!)), BigInt(d.seq));
      t.deepEqual(decodeEventBatch(hex(frames[2]!)), fromFixture(d.batch), `message ${i}`);
    });
  });

  test(`vllm-events - encoder reproduces the ${encoding} fixture bytes exactly`, (t) => {
    const fx = load(file);
    for (const frames of fx.frames as string[][]) {
      t.is(encodeEventBatch(decodeEventBatch(hex(frames[2]!)), { encoding }).toString('hex'), frames[2]);
    }
  });
}

test('vllm-events - the three encodings normalize to the same batches, hashes as uint64 bigint or hex', (t) => {
  const all = EVENT_ENCODINGS.map((e) => (load(FRAME_FILES[e]).frames as string[][]).map((f) => decodeEventBatch(hex(f[2]!))));
  t.deepEqual(all[0], all[1]);
  t.deepEqual(all[1], all[2]);
  const stored = all[0]![1]!.events[0]!;
  t.is(stored.type, 'BlockStored');
  if (stored.type !== 'BlockStored') return;
  t.deepEqual(stored.block_hashes, [2758186210834249151n, 2n ** 64n - 2n]);
  t.is(stored.parent_block_hash, 3236607068019569386n);
  const digest = all[0]![4]!.events[0]!;
  if (digest.type !== 'BlockStored') return t.fail();
  t.deepEqual(digest.block_hashes, ['202da172482d928bbc42ab25b0151e2b895f13f41002e27b2ceabcfae6d332ea']);
  // the index files a digest under the int vLLM would have reported for it
  t.is(hashKey(digest.block_hashes[0]!), 3236607068019569386n);
});

test('vllm-events - DEALER replay fixture: seqs, payloads and end marker in every encoding', (t) => {
  const fx = load('replay-dealer.json');
  t.deepEqual(fx.request_frames.map((h: string) => hex(h)), [Buffer.alloc(0), encodeSeq(2n)]);
  const check = (frames: string[][], decoded: Record<string, unknown>[]) => {
    frames.forEach((f, i) => {
      t.is(f.length, 3);
      t.is(f[0], '');
      const seq = decodeSeq(hex(f[1]!));
      if (decoded[i]!.end_of_replay) {
        t.is(seq, SEQ_END);
        t.is(f[2], '');
      } else {
        t.is(seq, BigInt(decoded[i]!.seq as string));
        t.deepEqual(decodeEventBatch(hex(f[2]!)), fromFixture(decoded[i]!.batch as Record<string, unknown>));
      }
    });
    t.is(decodeSeq(hex(frames.at(-1)![1]!)), SEQ_END);
  };
  check(fx.frames, fx.decoded);
  for (const [file, other] of Object.entries(fx.other_encodings) as [string, { frames: string[][] }][]) {
    check(other.frames, fx.decoded); // same batches in another encoding
    const live = load(file).frames as string[][];
    for (const f of other.frames.slice(0, -1)) t.is(f[2], live[Number(decodeSeq(hex(f[1]!)))]![2], 'replayed payload = live payload');
  }
});

test('vllm-events - REQ replay fixture decodes (the single reply a REQ socket gets)', (t) => {
  const fx = load('replay-req.json');
  const all = [fx, ...Object.values(fx.other_encodings)] as { frames: string[][]; decoded: Record<string, unknown>[] }[];
  for (const x of all) {
    t.is(x.frames.length, 1);
    t.is(decodeSeq(hex(x.frames[0]![0]!)), 3n);
    t.deepEqual(decodeEventBatch(hex(x.frames[0]![1]!)), fromFixture(x.decoded[0]!.batch as Record<string, unknown>));
  }
});

const u64 = fc.bigInt({ min: 0n, max: 2n ** 64n - 1n });
const hashArb: fc.Arbitrary<BlockHash> = fc.oneof(u64, fc.uint8Array({ minLength: 32, maxLength: 32 }).map((b) => Buffer.from(b).toString('hex')));
const optNat = fc.option(fc.nat({ max: 1 << 20 }), { nil: null });
const optStr = fc.option(fc.string({ maxLength: 40 }), { nil: null });
const extraKeyArb: fc.Arbitrary<ExtraKey> = fc.oneof(
  fc.string({ maxLength: 20 }), fc.integer({ min: -(2 ** 31), max: 2 ** 32 - 1 }),
  fc.uint8Array({ maxLength: 40 }).map((b) => Buffer.from(b)), fc.constant(null),
  fc.tuple(fc.string({ maxLength: 10 }), fc.integer({ min: -64, max: 64 })),
);
const eventArb: fc.Arbitrary<KvEvent> = fc.oneof(
  fc.record({
    type: fc.constant('BlockStored' as const), block_hashes: fc.array(hashArb, { maxLength: 4 }), parent_block_hash: fc.option(hashArb, { nil: null }),
    token_ids: fc.array(fc.nat({ max: 2 ** 32 - 1 }), { maxLength: 40 }), block_size: fc.integer({ min: 1, max: 1024 }), lora_id: optNat,
    medium: optStr, lora_name: optStr, extra_keys: fc.option(fc.array(fc.option(fc.array(extraKeyArb, { maxLength: 3 }), { nil: null }), { maxLength: 4 }), { nil: null }),
    group_idx: optNat, kv_cache_spec_kind: optStr, kv_cache_spec_sliding_window: optNat,
  }),
  fc.record({ type: fc.constant('BlockRemoved' as const), block_hashes: fc.array(hashArb, { maxLength: 4 }), medium: optStr, group_idx: optNat }),
  fc.constant({ type: 'AllBlocksCleared' as const }),
);
const batchArb: fc.Arbitrary<KvEventBatch> = fc.record({
  ts: fc.double({ noNaN: true }), events: fc.array(eventArb, { maxLength: 5 }), data_parallel_rank: optNat,
});

test('vllm-events - encode → decode is the identity in every encoding (property)', (t) => {
  fc.assert(fc.property(batchArb, fc.constantFrom(...EVENT_ENCODINGS), (batch, encoding) => {
    t.deepEqual(decodeEventBatch(encodeEventBatch(batch, { encoding })), batch);
  }), { numRuns: 300 });
});

test('vllm-events - decoder is lenient: small and signed ints, unknown fields, tags and positions, short events', (t) => {
  const p = new Packr({ useRecords: false, int64AsType: 'bigint', variableMapSize: true });
  const unknown: unknown[] = [];
  const batch = decodeEventBatch(p.pack([1.5, [
    { type: 'BlockStored', block_hashes: [5, -1, -(2n ** 63n)], parent_block_hash: 7n, token_ids: [1, 2], block_size: 2, lora_id: null, medium: 'GPU', lora_name: null, locality: 'rack-1', future: [1] },
    { type: 'BlockMoved', block_hashes: [1] },
    ['BlockRemoved', [3], 'CPU', 2, 'local', [1, 2], 'future position'],
    ['BlockStored', [9], null, [1, 2], 2], // a release before `lora_id` / `medium` existed
    ['AllBlocksCleared', 'extra'],
  ], 3, 'future envelope field']), { onUnknown: (tag) => unknown.push(tag) });
  t.deepEqual(unknown, ['BlockMoved']);
  t.is(batch.data_parallel_rank, 3);
  t.deepEqual(batch.events.map((e) => e.type), ['BlockStored', 'BlockRemoved', 'BlockStored', 'AllBlocksCleared']);
  const s = batch.events[0]!;
  if (s.type !== 'BlockStored') return t.fail();
  t.deepEqual(s.block_hashes, [5n, 2n ** 64n - 1n, 2n ** 63n]);
  t.is(s.parent_block_hash, 7n);
  t.deepEqual(batch.events[1], { type: 'BlockRemoved', block_hashes: [3n], medium: 'CPU', group_idx: 2 });
  const old = batch.events[2]!;
  if (old.type !== 'BlockStored') return t.fail();
  t.is(old.medium, null);
  t.is(old.extra_keys, null);
  const env = decodeEventBatch(p.pack({ ts: 2, events: [], extra: 1 }));
  t.deepEqual(env, { ts: 2, events: [], data_parallel_rank: null });
});

test('vllm-events - bad payloads get coded errors naming the field', (t) => {
  const p = new Packr({ useRecords: false });
  t.is(t.throws<KvstashError>(() => decodeEventBatch(Buffer.from([0xc1])))?.code, ErrorCode.BAD_HEADER);
  t.is(t.throws<KvstashError>(() => decodeEventBatch(p.pack('batch')))?.code, ErrorCode.BAD_HEADER);
  const e1 = t.throws<KvstashError>(() => decodeEventBatch(p.pack([1.0, { not: 'a list' }, 0])));
  t.is(e1?.code, ErrorCode.BAD_FIELD);
  const e2 = t.throws<KvstashError>(() => decodeEventBatch(p.pack([1.0, [{ type: 'BlockRemoved', block_hashes: ['abc'], medium: 'GPU' }], 0])));
  t.is(e2?.code, ErrorCode.BAD_FIELD);
  t.regex(e2!.message, /block hash/);
  const e3 = t.throws<KvstashError>(() => decodeEventBatch(p.pack([1.0, [['BlockStored', [1], null, 'tokens', 16]], 0])));
  t.regex(e3!.message, /token_ids/);
  t.is(t.throws<KvstashError>(() => encodeEventBatch({ ts: 0, events: [], data_parallel_rank: null }, { encoding: 'yaml' as EventEncoding }))?.code, ErrorCode.INVALID_ARGUMENT);
});

test('vllm-hash - every sha256_cbor vector of hash-vectors.json (the pickle `sha256` variants are not implemented)', (t) => {
  const hv = load('hash-vectors.json');
  const v = hv.vectors.find((x: { algorithm: string }) => x.algorithm === 'sha256_cbor');
  t.is(canonicalCbor(v.PYTHONHASHSEED).toString('hex'), v.seed_serialized_hex);
  t.is(noneHash(v.PYTHONHASHSEED).toString('hex'), v.none_hash_hex);
  const digests: Record<string, Buffer> = {};
  for (const b of v.blocks) {
    const parent = b.parent === 'NONE_HASH' ? noneHash(v.PYTHONHASHSEED) : digests[b.parent]!;
    const extra = b.extra_keys as string[] | null;
    const obj = [parent, b.tokens, extra] as const;
    if (b.serialized_hex) t.is(canonicalCbor(obj).toString('hex'), b.serialized_hex);
    digests[b.name] = vllmBlockDigests(b.tokens, { blockSize: v.block_size, noneHash: parent, lora: extra?.[0] })[0]!;
    t.is(digests[b.name]!.toString('hex'), b.digest_hex, b.name);
    t.is(eventInt(digests[b.name]!), BigInt(b.event_int), b.name);
  }
  // the same vectors through the public chain API: LoRA on every block, salt only on block 0
  const tokens = Array.from({ length: 40 }, (_, i) => i + 1);
  const [b0, b1] = v.blocks;
  t.deepEqual(vllmEventHashes(tokens, { blockSize: 16, seed: '0' }), [BigInt(b0.event_int), BigInt(b1.event_int)]);
  const salted = vllmEventHashes(tokens.slice(0, 16), { blockSize: 16, cacheSalt: 'tenant-a' });
  t.deepEqual(salted, [BigInt(v.blocks[3].event_int)]);
  t.deepEqual(blockExtraKeys(1, 16, 32, { blockSize: 16, lora: 'a', cacheSalt: 's' }), ['a']);
  t.deepEqual(blockExtraKeys(0, 0, 16, { blockSize: 16, lora: 'a', cacheSalt: 's', mm: [{ identifier: 'img', offset: 10, length: 20 }] }), ['a', ['img', 10], 's']);
  t.deepEqual(blockExtraKeys(1, 16, 32, { blockSize: 16, mm: [{ identifier: 'img', offset: 10, length: 20 }] }), [['img', -6]]);
});

test('vllm-hash - canonical CBOR heads follow the shortest form', (t) => {
  const cases: [Parameters<typeof canonicalCbor>[0], string][] = [
    [0, '00'], [23, '17'], [24, '1818'], [255, '18ff'], [256, '190100'], [65536, '1a00010000'], [2 ** 32, '1b0000000100000000'],
    [-1, '20'], [-25, '3818'], [null, 'f6'], ['', '60'], ['a'.repeat(24), '7818' + '61'.repeat(24)],
    [Buffer.alloc(32), '5820' + '00'.repeat(32)], [[], '80'], [new Array(24).fill(0), '9818' + '00'.repeat(24)],
    [2n ** 64n - 1n, '1bffffffffffffffff'], ['é', '62c3a9'],
  ];
  for (const [v, h] of cases) t.is(canonicalCbor(v).toString('hex'), h, JSON.stringify(String(v)));
});

test('vllm-events - residency: GPU vs other media, groups, removal, clear, cap and block-size mismatch', (t) => {
  const idx = new ResidencyIndex({ maxBlocksPerEngine: 3 }, 16);
  const stored = (hashes: BlockHash[], medium: string | null = 'GPU', group: number | null = 0, bs = 16): KvEvent => ({
    type: 'BlockStored', block_hashes: hashes, parent_block_hash: null, token_ids: [], block_size: bs, lora_id: null, medium,
    lora_name: null, extra_keys: null, group_idx: group, kv_cache_spec_kind: null, kv_cache_spec_sliding_window: null,
  });
  const removed = (hashes: BlockHash[], medium: string | null = 'GPU', group: number | null = 0): KvEvent => ({ type: 'BlockRemoved', block_hashes: hashes, medium, group_idx: group });
  const apply = (events: KvEvent[], rank = 0) => idx.apply('e', { ts: 0, events, data_parallel_rank: rank });
  apply([stored([1n, 2n]), stored([2n], 'GPU', 1), stored([9n], 'CPU'), stored([5n], null)]);
  t.deepEqual(idx.resident('e'), [1n, 2n, 5n]);
  t.deepEqual(idx.resident('e', 0, 'CPU'), [9n]);
  apply([removed([2n], 'GPU', 1)]); // the group-0 copy keeps block 2 resident
  t.deepEqual(idx.lookup([1n, 2n, 5n]), [{ engine: 'e', dp_rank: 0, hit_blocks: 3, blocks: 3 }]);
  apply([removed([2n], 'GPU', 0), removed([9n], 'GPU')]);
  t.deepEqual(idx.resident('e'), [1n, 5n]);
  t.deepEqual(idx.resident('e', 0, 'CPU'), [9n]);
  apply([stored([6n, 7n]), stored([8n], 'GPU', 0, 32)]); // over the cap of 3: oldest (1, 5) go first
  t.deepEqual(idx.resident('e'), [6n, 7n, 8n]);
  apply([stored([1n])], 1);
  t.deepEqual(idx.lookup([6n, 7n]).map((e) => [e.dp_rank, e.hit_blocks]), [[0, 2], [1, 0]]);
  const sum = idx.summary().find((s) => s.dp_rank === 0)!;
  t.is(sum.evicted, 2);
  t.is(sum.blockSizeMismatches, 1);
  apply([{ type: 'AllBlocksCleared' }]);
  t.deepEqual(idx.resident('e'), []);
  t.deepEqual(idx.resident('e', 0, 'CPU'), []);
  t.deepEqual(idx.resident('e', 1), [1n]);
  idx.drop('e');
  t.deepEqual(idx.resident('e', 1), []);
});
