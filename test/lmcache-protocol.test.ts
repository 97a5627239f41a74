/**
 * lm:// codec tests, no network: LMCache's own recorded exchanges (test/fixtures/lmcache/upstream) and kvstash's
 * recorded exchanges (test/fixtures/lmcache, decoded by Python struct) parse and re-encode byte for byte;
 * split and partial frames; generation sniffing; the mismatch cases are caught instead of desyncing;
 * property-based round trips.
 */
import test, { type ExecutionContext } from 'ava';
import fc from 'fast-check';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { LmFrameParser, type LmFrame } from '../adapters/lmcache/frame-parser.js';
import {
  Command, decodeClientHeader, decodeKeyField, decodeReplyHeader, encodeClientHeader, encodeReplyHeader, GENERATIONS, LAYOUTS,
  LmProtocolError, sniffGeneration, type ClientHeader, type Generation, type GenerationSetting, type Shape,
} from '../adapters/lmcache/protocol.js';
import { parseListenSpec } from '../adapters/lmcache/server.js';
import { decodeStoredValue, encodeStoredValue } from '../adapters/lmcache/stored-value.js';
import { ErrorCode } from '../protocol/errors.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const sharedFx = (f: string) => path.resolve(repoRoot, 'test', 'fixtures', 'lmcache', 'upstream', f);
const ownFx = (f: string) => path.join(repoRoot, 'test', 'fixtures', 'lmcache', f);

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- decoded fixture fields are numbers or strings by name
type Fields = Record<string, any>;
interface Exchange { op: string; client_hex: string; server_hex: string; decoded: { request?: Fields | null; reply?: Fields | null } }
const load = (file: string) => JSON.parse(readFileSync(file, 'utf8')) as { exchanges: Exchange[] };

const FIXTURES: { name: string; gen: Generation; file: string }[] = [
  { name: 'LMCache legacy-0.1', gen: 'legacy', file: sharedFx('legacy-0.1.json') },
  { name: 'LMCache v1-early', gen: 'v1-early', file: sharedFx('v1-early.json') },
  { name: 'LMCache v1-current', gen: 'v1', file: sharedFx('v1-current.json') },
  ...GENERATIONS.map((g) => ({ name: `kvstash ${g}`, gen: g, file: ownFx(`kvstash-${g}.json`) })),
];

function parseAll(gen: GenerationSetting, chunks: Buffer[]): { frames: LmFrame[]; parser: LmFrameParser } {
  const parser = new LmFrameParser({ generation: gen, maxPayloadBytes: 1 << 30 });
  const frames: LmFrame[] = [];
  for (const c of chunks) parser.push(c, (f) => frames.push(f));
  return { frames, parser };
}
const payloadOf = (f: LmFrame) => (f.payload ? f.payload.subarray(f.payloadOffset) : Buffer.alloc(0));

function checkRequest(t: ExecutionContext, gen: Generation, ex: Exchange): void {
  const client = Buffer.from(ex.client_hex, 'hex');
  const { frames, parser } = parseAll(gen, [client]);
  t.is(frames.length, 1, ex.op);
  t.false(parser.midFrame, ex.op);
  const h = frames[0]!.header;
  const r = ex.decoded.request!;
  t.is(h.command, r.command, ex.op);
  t.is(h.length, r.length, ex.op);
  t.is(h.key, r.key, ex.op);
  if (gen !== 'legacy') {
    t.is(h.fmt, r.fmt, ex.op);
    t.is(h.dtype, r.dtype, ex.op);
    t.deepEqual(h.shape, [r.shape0, r.shape1, r.shape2, r.shape3], ex.op);
    t.is(h.location, gen === 'v1' ? r.location : 0, ex.op);
  }
  const hb = LAYOUTS[gen].clientHeaderBytes;
  t.true(encodeClientHeader(gen, h).equals(client.subarray(0, hb)), `${ex.op}: re-encoded header differs`);
  t.true(payloadOf(frames[0]!).equals(client.subarray(hb)), `${ex.op}: payload differs`);
  if (typeof r.payload_hex === 'string') t.is(payloadOf(frames[0]!).toString('hex'), r.payload_hex);
}

function checkReply(t: ExecutionContext, gen: Generation, ex: Exchange): void {
  const server = Buffer.from(ex.server_hex, 'hex');
  if (server.length === 0) return;
  const hb = LAYOUTS[gen].replyHeaderBytes;
  const h = decodeReplyHeader(gen, server.subarray(0, hb));
  const r = ex.decoded.reply!;
  t.is(h.code, r.code, ex.op);
  t.is(h.length, r.length, ex.op);
  if (gen !== 'legacy') {
    t.deepEqual([h.fmt, h.dtype, ...h.shape], [r.fmt, r.dtype, r.shape0, r.shape1, r.shape2, r.shape3], ex.op);
    t.is(h.location, gen === 'v1' ? r.location : 0, ex.op);
  }
  t.true(encodeReplyHeader(gen, h).equals(server.subarray(0, hb)), `${ex.op}: re-encoded reply differs`);
  t.is(server.length - hb, h.code === 200 ? h.length : 0, `${ex.op}: payload length`);
}

for (const fx of FIXTURES) {
  test(`lmcache protocol - ${fx.name} exchanges parse and re-encode byte for byte`, (t) => {
    const exchanges = load(fx.file).exchanges.filter((e) => e.client_hex.length > 0);
    t.true(exchanges.length >= 6);
    for (const ex of exchanges) {
      checkRequest(t, fx.gen, ex);
      checkReply(t, fx.gen, ex);
      t.is(sniffGeneration(Buffer.from(ex.client_hex, 'hex')), fx.gen, `${ex.op}: sniffed generation`);
    }
  });

  test(`lmcache protocol - ${fx.name} stream parses the same whatever the split (auto-detected)`, (t) => {
    const stream = Buffer.concat(load(fx.file).exchanges.map((e) => Buffer.from(e.client_hex, 'hex')));
    const whole = parseAll(fx.gen, [stream]).frames;
    const bytewise = parseAll('auto', [...stream].map((b) => Buffer.from([b])));
    t.is(bytewise.parser.generation, fx.gen);
    t.deepEqual(bytewise.frames.map((f) => [f.header, payloadOf(f).toString('hex')]), whole.map((f) => [f.header, payloadOf(f).toString('hex')]));
    fc.assert(fc.property(fc.uniqueArray(fc.integer({ min: 1, max: stream.length - 1 }), { maxLength: 12 }), (cuts) => {
      const pts = [0, ...cuts.sort((a, b) => a - b), stream.length];
      const chunks = pts.slice(1).map((p, i) => stream.subarray(pts[i]!, p));
      const got = parseAll('auto', chunks).frames;
      return got.length === whole.length && got.every((f, i) => JSON.stringify(f.header) === JSON.stringify(whole[i]!.header) && payloadOf(f).equals(payloadOf(whole[i]!)));
    }), { numRuns: 60 });
  });
}

test('lmcache protocol - a partial frame is held until complete, then delivered once', (t) => {
  const h = encodeClientHeader('v1', { command: Command.PUT, length: 10, key: 'k', fmt: 1, dtype: 3, location: 0, shape: [1, 1, 1, 10] });
  const p = new LmFrameParser({ generation: 'v1', maxPayloadBytes: 100, payloadOffset: () => 5 });
  const frames: LmFrame[] = [];
  p.push(h.subarray(0, 100), (f) => frames.push(f));
  t.is(frames.length, 0);
  t.true(p.midFrame);
  p.push(Buffer.concat([h.subarray(100), Buffer.from('01234')]), (f) => frames.push(f));
  t.is(frames.length, 0);
  p.push(Buffer.from('56789'), (f) => frames.push(f));
  t.is(frames.length, 1);
  t.false(p.midFrame);
  t.is(frames[0]!.payloadOffset, 5);
  t.is(frames[0]!.payload!.length, 15);
  t.is(payloadOf(frames[0]!).toString(), '0123456789');
});

test('lmcache protocol - a PUT over the payload limit is skipped and the stream stays aligned', (t) => {
  const put = encodeClientHeader('legacy', { command: Command.PUT, length: 1000, key: 'big', fmt: 0, dtype: 0, location: 0, shape: [0, 0, 0, 0] });
  const exist = encodeClientHeader('legacy', { command: Command.EXIST, length: 0, key: 'after', fmt: 0, dtype: 0, location: 0, shape: [0, 0, 0, 0] });
  const { frames } = parseAll('legacy', [Buffer.concat([put, Buffer.alloc(600)]), Buffer.concat([Buffer.alloc(400), exist])]);
  const p = new LmFrameParser({ generation: 'legacy', maxPayloadBytes: 999 });
  const got: LmFrame[] = [];
  p.push(Buffer.concat([put, Buffer.alloc(1000), exist]), (f) => got.push(f));
  t.is(frames.length, 2);
  t.deepEqual(got.map((f) => [f.header.command, f.dropped ?? false, f.payload === undefined]), [[1, true, true], [3, false, true]]);
  t.is(got[1]!.header.key, 'after');
});

/** Which generation each mismatch case's server speaks, from the fixture's wording. */
function serverGen(s: string): Generation {
  if (s.includes('legacy')) return 'legacy';
  if (s.includes('early')) return 'v1-early';
  return 'v1';
}

test('lmcache protocol - every mismatch case is either caught (KVS_BAD_HEADER) or held, never silently misread', (t) => {
  const mm = JSON.parse(readFileSync(sharedFx('mismatch.json'), 'utf8')) as { cases: { case: string; server: string; steps: { client_hex?: string }[] }[] };
  t.true(mm.cases.length >= 20);
  let caught = 0;
  for (const c of mm.cases) {
    const gen = serverGen(c.server);
    const bytes = c.steps.map((s) => Buffer.from(s.client_hex ?? '', 'hex')).filter((b) => b.length > 0);
    const p = new LmFrameParser({ generation: gen, maxPayloadBytes: 1 << 20 });
    const frames: LmFrame[] = [];
    let err: unknown;
    try {
      for (const b of bytes) p.push(b, (f) => frames.push(f));
    } catch (e) {
      err = e;
    }
    const sameGen = /^(HEALTH \(5\)|unknown command 99)/.test(c.case) || /with a key that is not a CacheEngineKey|fmt=99|dtype=42/.test(c.case);
    if (sameGen) {
      // Well-formed headers of the server's own generation: opaque keys and metadata are accepted, stream aligned.
      t.is(err, undefined, c.case);
      t.is(frames.length, bytes.length, c.case);
      t.false(p.midFrame, c.case);
      for (const f of frames) t.true(encodeClientHeader(gen, f.header).equals(bytes[frames.indexOf(f)]!.subarray(0, LAYOUTS[gen].clientHeaderBytes)), c.case);
      continue;
    }
    // Garbage, NUL-padded keys and every cross-generation header: an error with a stable code, or (a shorter
    // header than expected, nothing more sent yet) no frame at all — the stall timer closes it then.
    t.is(frames.length, 0, `${c.case}: no request may be served from a misaligned stream`);
    if (err) {
      t.true(err instanceof LmProtocolError, c.case);
      t.is((err as LmProtocolError).code, ErrorCode.BAD_HEADER, c.case);
      caught++;
    } else {
      t.true(p.midFrame, `${c.case}: neither caught nor waiting`);
    }
  }
  t.true(caught >= 15, `caught ${caught}`);
});

test('lmcache protocol - sniffing follows the documented byte rules', (t) => {
  const mk = (gen: Generation, key: string, shape: Shape = [0, 0, 0, 0]) => encodeClientHeader(gen, { command: Command.EXIST, length: 0, key, fmt: 1, dtype: 2, location: 0, shape });
  t.is(sniffGeneration(mk('legacy', '')), 'legacy'); // 150 spaces: ASCII at 8..11
  t.is(sniffGeneration(mk('legacy', 'ab')), 'legacy');
  t.is(sniffGeneration(mk('legacy', 'ü@model@1@0@ab')), 'legacy'); // UTF-8 key text
  t.is(sniffGeneration(mk('v1-early', 'vllm@x')), 'v1-early');
  t.is(sniffGeneration(mk('v1-early', '')), 'v1-early');
  t.is(sniffGeneration(mk('v1', 'vllm@x', [2, 32, 256, 1024])), 'v1');
  t.is(sniffGeneration(mk('v1', '')), 'v1');
  t.is(sniffGeneration(Buffer.alloc(35)), undefined);
});

test('lmcache protocol - decoder rejects what no client of the generation writes', (t) => {
  const base: ClientHeader = { command: Command.GET, length: 0, key: 'k', fmt: 1, dtype: 2, location: 0, shape: [0, 0, 0, 0] };
  const bad = (gen: Generation, mutate: (b: Buffer) => void, re: RegExp) => {
    const b = encodeClientHeader(gen, base);
    mutate(b);
    const e = t.throws(() => decodeClientHeader(gen, b), { instanceOf: LmProtocolError, message: re });
    t.is(e?.code, ErrorCode.BAD_HEADER);
  };
  bad('legacy', (b) => b.writeInt32LE(-1, 4), /negative length/);
  bad('v1', (b) => b.writeInt32LE(256, 8), /fmt 256/);
  bad('v1', (b) => b.writeInt32LE(-3, 12), /dtype -3/);
  bad('v1', (b) => b.writeInt32LE(1000, 16), /location 1000/);
  bad('v1-early', (b) => b.writeInt32LE(2 ** 30 + 1, 28), /shape\[3\]/);
  bad('v1', (b) => { b[36 + 1] = 0; }, /0x00/);
  bad('legacy', (b) => { b[8] = 0xc3; b[9] = 0x28; }, /UTF-8/);
  t.is(decodeKeyField(Buffer.from('  a b \t\n')), 'a b');
  t.throws(() => encodeClientHeader('legacy', { ...base, key: 'x'.repeat(151) }), { message: /151 bytes/ });
});

const keyArb = fc.string({ unit: 'grapheme', maxLength: 40 })
  .map((s) => s.replace(/[\u0000-\u001f\u007f]/g, '').trim())
  .filter((s) => Buffer.byteLength(s) <= 150 && s === s.replace(/^[\s\u001c-\u001f]+|[\s\u001c-\u001f]+$/g, ''));
const i32 = fc.integer({ min: 0, max: 255 });
const dim = fc.integer({ min: 0, max: 2 ** 30 });

test('lmcache protocol - property: any well-formed request round-trips in every generation and any split', (t) => {
  fc.assert(fc.property(
    fc.constantFrom(...GENERATIONS), fc.array(fc.record({
      command: fc.integer({ min: 1, max: 99 }), key: keyArb, fmt: i32, dtype: i32, location: i32,
      shape: fc.tuple(dim, dim, dim, dim), payload: fc.uint8Array({ maxLength: 300 }),
    }), { minLength: 1, maxLength: 6 }), fc.integer({ min: 1, max: 97 }), fc.boolean(),
    (gen, reqs, step, sniff) => {
      // Sniffing needs a NUL byte in the first request's shape3 (any dim below 2^24); else configure the port.
      if (sniff && gen === 'v1') reqs[0]!.shape[3] %= 2 ** 24;
      const norm = reqs.map((r) => ({
        command: r.command, key: r.key, length: r.command === Command.PUT ? r.payload.length : 0,
        fmt: gen === 'legacy' ? 0 : r.fmt, dtype: gen === 'legacy' ? 0 : r.dtype, location: gen === 'v1' ? r.location : 0,
        shape: (gen === 'legacy' ? [0, 0, 0, 0] : r.shape) as Shape, payload: r.command === Command.PUT ? Buffer.from(r.payload) : Buffer.alloc(0),
      }));
      const stream = Buffer.concat(norm.flatMap((r) => [encodeClientHeader(gen, r), r.payload]));
      const chunks: Buffer[] = [];
      for (let i = 0; i < stream.length; i += step) chunks.push(stream.subarray(i, i + step));
      const { frames } = parseAll(sniff ? 'auto' : gen, chunks);
      assert.equal(frames.length, norm.length);
      frames.forEach((f, i) => {
        const { payload, ...hdr } = norm[i]!;
        assert.deepEqual(f.header, hdr);
        assert.ok(payloadOf(f).equals(payload));
      });
    }), { numRuns: 150 });
  t.pass();
});

test('lmcache protocol - property: reply headers round-trip; arbitrary bytes never crash the parser', (t) => {
  fc.assert(fc.property(fc.constantFrom(...GENERATIONS), fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }), fc.nat(), i32, i32, i32, fc.tuple(dim, dim, dim, dim), (gen, code, length, fmt, dtype, location, shape) => {
    const r = { code, length, fmt: gen === 'legacy' ? 0 : fmt, dtype: gen === 'legacy' ? 0 : dtype, location: gen === 'v1' ? location : 0, shape: (gen === 'legacy' ? [0, 0, 0, 0] : shape) as Shape };
    const b = encodeReplyHeader(gen, r);
    assert.equal(b.length, LAYOUTS[gen].replyHeaderBytes);
    assert.deepEqual(decodeReplyHeader(gen, b), r);
  }), { numRuns: 100 });
  fc.assert(fc.property(fc.constantFrom<GenerationSetting>('auto', ...GENERATIONS), fc.uint8Array({ minLength: 1, maxLength: 800 }), (gen, bytes) => {
    const p = new LmFrameParser({ generation: gen, maxPayloadBytes: 4096 });
    try {
      p.push(Buffer.from(bytes), () => undefined);
    } catch (e) {
      assert.ok(e instanceof LmProtocolError);
      assert.throws(() => p.push(Buffer.alloc(1), () => undefined), LmProtocolError);
    }
  }), { numRuns: 200 });
  t.pass();
});

test('lmcache protocol - stored values keep metadata, key and payload exactly; foreign bytes do not decode', (t) => {
  fc.assert(fc.property(fc.constantFrom(...GENERATIONS), keyArb, i32, i32, i32, fc.tuple(dim, dim, dim, dim), fc.uint8Array({ maxLength: 200 }), (gen, key, fmt, dtype, location, shape, payload) => {
    const meta = { fmt, dtype, location, shape: shape as Shape };
    const o = decodeStoredValue(encodeStoredValue(gen, key, meta, Buffer.from(payload)));
    assert.deepEqual(o && { ...o, payload: [...o.payload] }, { generation: gen, key, meta, payload: [...payload] });
  }), { numRuns: 100 });
  t.is(decodeStoredValue(Buffer.from('KVSB0000000000000000000000000000000000000000')), undefined);
  t.is(decodeStoredValue(Buffer.alloc(10)), undefined);
});

test('lmcache protocol - listen specs parse host:port[/generation] and reject anything else with KVS_CONFIG', (t) => {
  t.deepEqual(parseListenSpec('127.0.0.1:65432'), { host: '127.0.0.1', port: 65432, generation: 'auto' });
  t.deepEqual(parseListenSpec('0.0.0.0:0/legacy'), { host: '0.0.0.0', port: 0, generation: 'legacy' });
  t.deepEqual(parseListenSpec('[::1]:7000/v1-early'), { host: '::1', port: 7000, generation: 'v1-early' });
  t.deepEqual(parseListenSpec('localhost:1/v1'), { host: 'localhost', port: 1, generation: 'v1' });
  for (const bad of ['127.0.0.1', '127.0.0.1:70000', 'h:1/v2', 'h:x', '']) t.throws(() => parseListenSpec(bad), { message: /lmcache: expected/ });
});
