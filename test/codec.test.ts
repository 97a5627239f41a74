import test from 'ava';
import fc from 'fast-check';
import { readFileSync } from 'node:fs';
import { decodeReply, decodeRequest, encodeReply, encodeRequest, packHeader, ProtocolError, unpackHeader } from '../protocol/codec.js';
import { ErrorCode, isErrorCode } from '../protocol/errors.js';
import type { Limits } from '../protocol/wire.js';

const limits: Limits = { maxMessageBytes: 1 << 20, maxBlockBytes: 1 << 16, maxInflightBytes: 1 << 20, maxKeysPerRequest: 1024 };
const golden = JSON.parse(readFileSync(new URL('../protocol/golden/v1.json', import.meta.url), 'utf8')) as {
  examples: { name: string; kind: string; header: Record<string, unknown>; frames: string[] }[];
};
const fromJson = (v: unknown): unknown => {
  if (Array.isArray(v)) return v.map(fromJson);
  if (v && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    if (typeof o.bin_hex === 'string') return Buffer.from(o.bin_hex, 'hex');
    return Object.fromEntries(Object.entries(o).map(([k, x]) => [k, fromJson(x)]));
  }
  return v;
};
const NS = 'a'.repeat(32);

for (const ex of golden.examples) {
  test(`codec - golden ${ex.name} decodes to its header and re-encodes byte for byte`, (t) => {
    const frames = ex.frames.map((h) => Buffer.from(h, 'hex'));
    const header = fromJson(ex.header) as Record<string, unknown>;
    if (ex.kind === 'request') {
      const d = decodeRequest(frames, limits);
      t.deepEqual({ ...d.header }, header);
      t.is(d.blocks.length, frames.length - 1);
    } else {
      t.deepEqual(decodeReply(frames).header, header);
    }
    t.is(packHeader(header).toString('hex'), ex.frames[0]);
  });
}

test('codec - request round trip keeps block frames as they are', (t) => {
  const blocks = [Buffer.from([1, 2, 3]), Buffer.alloc(0)];
  const frames = encodeRequest({ id: 7, op: 'PUT', ns: NS, keys: Buffer.alloc(64, 1), sizes: [3, 0] }, blocks);
  const d = decodeRequest(frames, limits);
  t.is(d.blocks[0], blocks[0]); // same Buffer object: never re-encoded
  t.deepEqual(d.header.op, 'PUT');
});

const cases: [string, Buffer[], ErrorCode][] = [
  ['malformed msgpack', [Buffer.from([0xc1, 0xff, 0x00])], ErrorCode.BAD_HEADER],
  ['header not a map', [packHeader([1, 2, 3])], ErrorCode.BAD_HEADER],
  ['missing id', [packHeader({ v: 1, op: 'PING' })], ErrorCode.BAD_FIELD],
  ['wrong version', [packHeader({ v: 2, id: 1, op: 'PING' })], ErrorCode.VERSION],
  ['unknown op', [packHeader({ v: 1, id: 1, op: 'FROB' })], ErrorCode.UNKNOWN_OP],
  ['key length', [packHeader({ v: 1, id: 1, op: 'GET', ns: NS, keys: Buffer.alloc(31) })], ErrorCode.KEY_LENGTH],
  ['keys not binary', [packHeader({ v: 1, id: 1, op: 'GET', ns: NS, keys: 'abc' })], ErrorCode.KEY_LENGTH],
  ['bad namespace', [packHeader({ v: 1, id: 1, op: 'GET', ns: 'x', keys: Buffer.alloc(32) })], ErrorCode.NS_UNKNOWN],
  ['frames disagree with sizes', [packHeader({ v: 1, id: 1, op: 'PUT', ns: NS, keys: Buffer.alloc(32), sizes: [5] }), Buffer.alloc(4)], ErrorCode.FRAME_MISMATCH],
  ['missing frames', [packHeader({ v: 1, id: 1, op: 'PUT', ns: NS, keys: Buffer.alloc(64), sizes: [1, 1] }), Buffer.alloc(1)], ErrorCode.FRAME_MISMATCH],
  ['frames on GET', [packHeader({ v: 1, id: 1, op: 'GET', ns: NS, keys: Buffer.alloc(32) }), Buffer.alloc(1)], ErrorCode.FRAME_MISMATCH],
  ['oversized message', [packHeader({ v: 1, id: 1, op: 'PUT', ns: NS, keys: Buffer.alloc(32), sizes: [2 << 20] }), Buffer.alloc(2 << 20)], ErrorCode.TOO_LARGE],
  ['oversized block', [packHeader({ v: 1, id: 1, op: 'PUT', ns: NS, keys: Buffer.alloc(32), sizes: [1 << 17] }), Buffer.alloc(1 << 17)], ErrorCode.TOO_LARGE],
  ['too many keys', [packHeader({ v: 1, id: 1, op: 'EXISTS', ns: NS, keys: Buffer.alloc(32 * 1025) })], ErrorCode.TOO_LARGE],
  ['bad sums', [packHeader({ v: 1, id: 1, op: 'PUT', ns: NS, keys: Buffer.alloc(32), sizes: [1], sums: ['xyz'] }), Buffer.alloc(1)], ErrorCode.BAD_FIELD],
  ['bad hello', [packHeader({ v: 1, id: 1, op: 'HELLO', namespace: { model: 'm' } })], ErrorCode.BAD_FIELD],
  ['id beyond 2^53 (BigInt)', [packHeader({ v: 1, id: 2n ** 60n, op: 'PING' })], ErrorCode.BAD_FIELD],
  ['version beyond 2^53 (BigInt)', [packHeader({ v: 2n ** 63n, id: 1, op: 'PING' })], ErrorCode.BAD_FIELD],
  ['op as a BigInt', [packHeader({ v: 1, id: 1, op: 2n ** 62n })], ErrorCode.BAD_FIELD],
  ['unsafe int in a namespace field', [packHeader({ v: 1, id: 1, op: 'HELLO', namespace: { model: 'm', engine: 'e', layout: 'l', tenant: 't', tp_rank: 0, tp_size: 2n ** 60n, pp_rank: 0, pp_size: 1 } })], ErrorCode.BAD_FIELD],
  ['unsafe int in an unknown field of a plugin op', [packHeader({ v: 1, id: 1, op: 'STATS', extra: 2n ** 54n })], ErrorCode.BAD_FIELD],
  ['unsafe float id 2^53', [packHeader({ v: 1, id: 2 ** 53, op: 'PING' })], ErrorCode.BAD_FIELD],
];
for (const [name, frames, code] of cases) {
  test(`codec - ${name} is rejected with ${code}`, (t) => {
    const err = t.throws(() => decodeRequest(frames, limits), { instanceOf: ProtocolError });
    t.is(err?.code, code);
  });
}

test('codec - an error still reports the request id when it could be read', (t) => {
  const err = t.throws(() => decodeRequest([packHeader({ v: 9, id: 42, op: 'PING' })], limits)) as ProtocolError;
  t.is(err.requestId, 42);
});

test('codec - fuzz: arbitrary frames either decode or fail with a stable code, never anything else', (t) => {
  fc.assert(fc.property(fc.array(fc.uint8Array({ maxLength: 200 }), { minLength: 1, maxLength: 4 }), (arrs) => {
    const frames = arrs.map((a) => Buffer.from(a));
    try {
      decodeRequest(frames, limits);
    } catch (err) {
      return err instanceof ProtocolError && isErrorCode(err.code);
    }
    return true;
  }), { numRuns: 3000 });
  t.pass();
});

test('codec - fuzz: arbitrary msgpack headers either decode or fail with a stable code', (t) => {
  const anyHeader = fc.record({
    v: fc.oneof(fc.constant(1), fc.integer()), id: fc.oneof(fc.nat(), fc.integer(), fc.string()),
    op: fc.constantFrom('HELLO', 'LOOKUP', 'PUT', 'GET', 'EXISTS', 'DELETE', 'STATS', 'PING', 'NOPE'),
    ns: fc.oneof(fc.constant(NS), fc.string()), keys: fc.oneof(fc.uint8Array({ maxLength: 96 }).map((u) => Buffer.from(u)), fc.string()),
    sizes: fc.array(fc.nat(100)), namespace: fc.anything(),
  }, { requiredKeys: [] });
  fc.assert(fc.property(anyHeader, fc.array(fc.uint8Array({ maxLength: 50 }), { maxLength: 3 }), (h, blocks) => {
    try {
      const d = decodeRequest([packHeader(h), ...blocks.map((b) => Buffer.from(b))], limits);
      return typeof d.header.op === 'string';
    } catch (err) {
      return err instanceof ProtocolError && isErrorCode(err.code);
    }
  }), { numRuns: 3000 });
  t.pass();
});

test('codec - property: valid PUT requests round-trip', (t) => {
  fc.assert(fc.property(fc.array(fc.uint8Array({ maxLength: 64 }), { minLength: 1, maxLength: 8 }), fc.nat(1e6), (bs, id) => {
    const blocks = bs.map((b) => Buffer.from(b));
    const keys = Buffer.alloc(32 * blocks.length, 7);
    const d = decodeRequest(encodeRequest({ id, op: 'PUT', ns: NS, keys, sizes: blocks.map((b) => b.length) }, blocks), limits);
    return d.header.id === id && d.blocks.every((b, i) => b.equals(blocks[i]!)) && (d.header as { keys: Buffer }).keys.equals(keys);
  }), { numRuns: 500 });
  t.pass();
});

test('codec - replies encode status OK and decode with their id', (t) => {
  const r = decodeReply(encodeReply({ id: 5, hit: 3 }));
  t.is(r.header.status, 'OK');
  t.is(r.header.id, 5);
  t.deepEqual(unpackHeader(encodeReply({ id: 1 })[0]!), { v: 1, status: 'OK', id: 1 });
});

test('codec - an unsafe integer in a header is a coded error whose message names the field', (t) => {
  const err = t.throws(() => decodeRequest([packHeader({ v: 1, id: 3, op: 'PING', when: 2n ** 60n })], limits)) as ProtocolError;
  t.is(err.code, ErrorCode.BAD_FIELD);
  t.is(err.requestId, 3);
  t.regex(err.message, /"when" is an integer beyond 2\^53 \(1152921504606846976n\)/);
});

test('codec - a uint64/int64 in the safe range (as Python msgpack sends 41-bit timestamps) decodes as a number', (t) => {
  // {"v": 1, "id": 9, "op": "PING", "ts": uint64 1796810152963}: the encoding Python's msgpack uses for ints ≥ 2^32.
  const hdr = Buffer.concat([Buffer.from([0x84, 0xa1, 0x76, 0x01, 0xa2, 0x69, 0x64, 0x09, 0xa2, 0x6f, 0x70, 0xa4]), Buffer.from('PING'),
    Buffer.from([0xa2, 0x74, 0x73, 0xcf, 0, 0, 1, 0xa2, 0x5a, 0x3b, 0x1c, 0x03])]);
  const d = decodeRequest([hdr], limits);
  t.is((d.header as unknown as { ts: unknown }).ts, 1796810152963);
});
