/**
 * Fuzzers against a live sidecar: ≥ 100k lm:// requests (random commands, keys, metadata, payload lengths, in
 * every header generation, some connections ending in garbage or a torn header) and ≥ 100k data-socket
 * messages (random msgpack headers with wrong types, BigInts, unknown ops, mismatched frames, plus well-formed
 * requests on random keys). Known blocks written before are read back after (wrong bytes); every data-socket
 * reply must be OK or carry a known KVS_* code; the sidecar must answer throughout.
 */
import net from 'node:net';
import { Dealer } from 'zeromq';
import { LmClient } from '../../adapters/lmcache/client.js';
import { encodeClientHeader, GENERATIONS, type Generation } from '../../adapters/lmcache/protocol.js';
import { KvstashClient } from '../../connector/client.js';
import { packHeader, unpackHeader } from '../../protocol/codec.js';
import { isErrorCode } from '../../protocol/errors.js';
import { blockFor, keyOf, NS, rng, serve, tempDir, until, verdict, wrongBytes, type Row } from './common.js';

const KEY_CHARS = 'abcdefghijklmnopqrstuvwxyz0123456789@_/.:';

export async function fuzzLm(cases: number, seed: number): Promise<Row> {
  const dir = tempDir('fuzz-lm');
  const s = await serve(dir, ['--file-root', `${dir}/tier`, '--dram-bytes', '64MiB', '--lmcache', '127.0.0.1:0', '--lmcache-stall-ms', '500', '--lmcache-request-ms', '2000']);
  const port = Number((await s.waitFor(/lm:\/\/127\.0\.0\.1:(\d+)/))[1]);
  const r = rng(seed);
  const verify = await LmClient.connect('127.0.0.1', port, 'v1', { timeoutMs: 30_000 });
  const known = Array.from({ length: 64 }, (_, i) => [`verify-${i}`, blockFor(keyOf('lm-verify', i), 4096 + i)] as const);
  for (const [k, v] of known) verify.put(k, v);
  const data = new KvstashClient(s.endpoint, { timeoutMs: 30_000 });
  const stats = async () => (await data.request({ op: 'LMCACHE_STATS' })).header.lmcache as Record<string, number>;
  await until(async () => (await stats()).stored >= known.length, 60_000, 'the known lm:// values stored');
  const randKey = () => Array.from({ length: 1 + Math.floor(r() * 60) }, () => KEY_CHARS[Math.floor(r() * KEY_CHARS.length)]).join('');
  const frame = (gen: Generation): Buffer => {
    const cmd = [1, 1, 2, 2, 3, 4, 5, 7, 99][Math.floor(r() * 9)]!;
    const len = cmd === 1 ? Math.floor(r() * 2048) : 0;
    const h = encodeClientHeader(gen, {
      command: cmd, length: len, key: randKey(), fmt: Math.floor(r() * 256), dtype: Math.floor(r() * 256), location: Math.floor(r() * 256),
      shape: [Math.floor(r() * 4096), Math.floor(r() * 64), Math.floor(r() * 8), Math.floor(r() * 2)],
    });
    return len ? Buffer.concat([h, Buffer.alloc(len, Math.floor(r() * 256))]) : h;
  };
  let sent = 0;
  const one = (): Promise<void> => new Promise((resolve) => {
    const gen = GENERATIONS[Math.floor(r() * GENERATIONS.length)]!;
    const parts: Buffer[] = [];
    const n = 200 + Math.floor(r() * 600);
    for (let i = 0; i < n; i++) parts.push(frame(gen));
    sent += n;
    const end = r();
    if (end < 0.25) parts.push(Buffer.from(Array.from({ length: 200 }, () => Math.floor(r() * 256)))); // garbage
    else if (end < 0.35) parts.push(frame(gen).subarray(0, 50)); // a torn header: the stall deadline closes it
    const sock = net.connect({ host: '127.0.0.1', port }, () => { sock.write(Buffer.concat(parts)); if (end >= 0.35) sock.end(); });
    sock.on('data', () => undefined);
    sock.on('error', () => undefined);
    sock.on('close', () => resolve());
    setTimeout(() => sock.destroy(), 20_000).unref();
  });
  const before = await stats();
  let st = before;
  while (st.requests - before.requests + st.protocolErrors - before.protocolErrors < cases) {
    await Promise.all(Array.from({ length: 8 }, one));
    st = await stats();
  }
  let wrong = 0;
  let missing = 0;
  for (const [k, v] of known) {
    const got = await verify.get(k).catch(() => undefined);
    if (!got) missing++;
    else wrong += wrongBytes(got.payload, v);
  }
  const alive = await verify.health().catch(() => false);
  const peak = s.peakMiB();
  verify.close();
  data.close();
  await s.stop();
  return {
    attack: 'lm:// fuzzer', count: st.requests - before.requests + st.protocolErrors - before.protocolErrors, wrongBytes: wrong, lost: missing, peakRssMiB: peak,
    verdict: verdict(wrong === 0 && missing === 0 && alive),
    note: `${sent} frames sent, ${st.requests - before.requests} served, ${st.protocolErrors - before.protocolErrors} connections closed for bad headers or deadlines`,
  };
}

export async function fuzzData(cases: number, seed: number): Promise<Row> {
  const dir = tempDir('fuzz-data');
  const s = await serve(dir, ['--file-root', `${dir}/tier`, '--dram-bytes', '64MiB']);
  const r = rng(seed);
  const c = new KvstashClient(s.endpoint, { timeoutMs: 30_000 });
  const ns = await c.hello(NS);
  const known = Array.from({ length: 64 }, (_, i) => keyOf('data-verify', i));
  await c.put(ns, known, known.map((k) => blockFor(k, 8192)));
  const ops = ['HELLO', 'LOOKUP', 'PUT', 'GET', 'EXISTS', 'DELETE', 'STATS', 'PING', 'LMCACHE_STATS', 'NOPE', ''];
  const anyValue = (depth = 0): unknown => {
    const x = r();
    if (x < 0.15) return Math.floor(r() * 2 ** 32) - 2 ** 31;
    if (x < 0.25) return BigInt(Math.floor(r() * 2 ** 30)) * 2n ** 33n; // ≥ 2^53: a BigInt on decode
    if (x < 0.35) return r() * 1e20;
    if (x < 0.5) return randBytes(Math.floor(r() * 96));
    if (x < 0.65) return String.fromCharCode(...Array.from({ length: Math.floor(r() * 40) }, () => Math.floor(r() * 0x3000)));
    if (x < 0.7) return null;
    if (x < 0.8 && depth < 2) return Array.from({ length: Math.floor(r() * 4) }, () => anyValue(depth + 1));
    if (x < 0.9 && depth < 2) return Object.fromEntries(Array.from({ length: Math.floor(r() * 4) }, (_, i) => [`f${i}`, anyValue(depth + 1)]));
    return r() < 0.5;
  };
  const randBytes = (n: number) => Buffer.from(Array.from({ length: n }, () => Math.floor(r() * 256)));
  const message = (id: number): Buffer[] => {
    const x = r();
    if (x < 0.05) return [randBytes(Math.floor(r() * 64))];
    const op = ops[Math.floor(r() * ops.length)]!;
    const n = Math.floor(r() * 4);
    const keys = r() < 0.8 ? Buffer.concat(Array.from({ length: n }, () => randBytes(32))) : anyValue();
    const h: Record<string, unknown> = { v: r() < 0.95 ? 1 : anyValue(), id: r() < 0.95 ? id : anyValue(), op, ns: r() < 0.8 ? ns : anyValue(), keys };
    if (op === 'HELLO') h.namespace = r() < 0.5 ? { ...NS, model: `fuzz-${Math.floor(r() * 50)}`, tp_rank: anyValue() } : anyValue();
    const blocks = op === 'PUT' ? Array.from({ length: r() < 0.9 ? n : n + 1 }, () => randBytes(Math.floor(r() * 512))) : r() < 0.05 ? [randBytes(8)] : [];
    if (op === 'PUT') h.sizes = r() < 0.9 ? blocks.map((b) => b.length) : anyValue();
    if (r() < 0.2) h[`x${Math.floor(r() * 9)}`] = anyValue();
    return [packHeader(h), ...blocks];
  };
  const d = new Dealer({ receiveTimeout: 30_000 });
  d.connect(s.endpoint);
  let replies = 0;
  let badCodes = 0;
  const codes = new Map<string, number>();
  const reader = (async () => {
    while (replies < cases) {
      const [hdr] = await d.receive();
      replies++;
      const h = unpackHeader(hdr!) as { status?: string; code?: unknown };
      if (h.status === 'ERR') {
        codes.set(String(h.code), (codes.get(String(h.code)) ?? 0) + 1);
        if (!isErrorCode(h.code)) badCodes++;
      } else if (h.status !== 'OK') badCodes++;
    }
  })();
  for (let i = 0; i < cases; i++) {
    await d.send(message(i + 1));
    while (i + 1 - replies > 2000) await new Promise((res) => setImmediate(res));
  }
  let failed = '';
  await reader.catch((err: Error) => { failed = err.message; });
  const got = await c.get(ns, known);
  let wrong = 0;
  let missing = 0;
  got.forEach((g, i) => { if (!g) missing++; else wrong += wrongBytes(g, blockFor(known[i]!, 8192)); });
  const st = await c.stats();
  const undefinedCode = Object.keys(st.by_code as Record<string, number>).some((k) => !isErrorCode(k));
  const peak = s.peakMiB();
  d.close();
  c.close();
  await s.stop();
  return {
    attack: 'data-socket fuzzer', count: replies, wrongBytes: wrong, lost: missing, peakRssMiB: peak,
    verdict: verdict(!failed && replies === cases && badCodes === 0 && !undefinedCode && wrong === 0 && missing === 0),
    note: `${cases} sent, ${replies} answered${failed ? ` (${failed})` : ''}, ${badCodes} without a KVS_* code; top codes ${[...codes].sort((a, b) => b[1] - a[1]).slice(0, 3).map(([k, v]) => `${k} ${v}`).join(', ')}`,
  };
}
