/**
 * lm:// benchmark (issue 4): GET and PUT latency (p50/p99) and throughput of 4 KiB, 64 KiB, 1 MiB and 4 MiB
 * objects through kvstash's lm:// server (v1 header generation, DRAM tier), against a ceiling measured in the
 * same run: a plain TCP server answering the same frames from a preallocated buffer (no parser state, no
 * hashing, no storage). Also compares the two single-write strategies for replies: one concatenated buffer
 * vs cork + two writes + uncork (one writev).
 *
 * Servers run in a child process (this file with --serve); the client (adapters/lmcache/client.ts, the same
 * for every server) runs here. PUT latency is PUT + HEALTH on one connection (the PUT has no reply).
 * Throughput: 4 connections, each one request at a time (as LMCache's client does).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfig } from '../connector/config.js';
import { Sidecar } from '../connector/server/sidecar.js';
import { LmClient } from '../adapters/lmcache/client.js';
import { encodeReplyHeader, LAYOUTS, NO_META } from '../adapters/lmcache/protocol.js';
import { LmcacheServer } from '../adapters/lmcache/server.js';
import { formatTable, humanBytes, pct, quick, ratio } from './util.js';

const SIZES: [number, number][] = [[4 << 10, 2000], [64 << 10, 1000], [1 << 20, 200], [4 << 20, 60]];
const scale = quick ? 0.25 : 1;
const CONNS = 4;

/** The ceiling: same frames, no storage. GET/EXIST/HEALTH answered from a preallocated buffer; PUT skipped. */
function rawServer(): Promise<number> {
  const gen = 'v1';
  const hb = LAYOUTS[gen].replyHeaderBytes;
  const body = Buffer.alloc(4 << 20, 7);
  const server = net.createServer((sock) => {
    sock.setNoDelay(true);
    let buf: Buffer = Buffer.alloc(0);
    let skip = 0;
    sock.on('data', (c: Buffer) => {
      buf = buf.length ? Buffer.concat([buf, c]) : c;
      for (;;) {
        if (skip) {
          const n = Math.min(skip, buf.length);
          skip -= n;
          buf = buf.subarray(n);
          if (skip) return;
        }
        if (buf.length < 186) return;
        const cmd = buf.readInt32LE(0);
        const len = buf.readInt32LE(4);
        const key = buf.toString('latin1', 36, 186).trim();
        buf = buf.subarray(186);
        if (cmd === 1) { skip = len; continue; }
        const size = cmd === 2 ? Number(key.split('-')[1]) : 0;
        const small = size < 64 << 10; // same strategy as the kvstash default
        const out = Buffer.allocUnsafe(hb + (small ? size : 0));
        encodeReplyHeader(gen, { code: 200, length: size, ...NO_META }, out, 0);
        if (small) {
          body.copy(out, hb, 0, size);
          sock.write(out);
        } else {
          sock.cork();
          sock.write(out);
          sock.write(body.subarray(0, size));
          sock.uncork();
        }
      }
    });
    sock.on('error', () => undefined);
  });
  return new Promise((r) => server.listen(0, '127.0.0.1', () => r((server.address() as net.AddressInfo).port)));
}

async function serve(): Promise<void> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'kvstash-bench-lm-'));
  const ports: number[] = [];
  for (const [i, concatBelow] of [undefined, Infinity, 0].entries()) {
    const config = loadConfig({ endpoints: [`ipc://${path.join(dir, `s${i}.sock`)}`], fileRoot: '', dramBytes: '4GiB', logLevel: 'warn' }, {});
    const sidecar = new Sidecar(config);
    const lm = new LmcacheServer({ listen: [{ host: '127.0.0.1', port: 0, generation: 'v1' }], concatBelow });
    sidecar.use(lm);
    await sidecar.start();
    ports.push(lm.bound[0]!.port);
  }
  ports.push(await rawServer());
  process.on('SIGTERM', () => { rmSync(dir, { recursive: true, force: true }); process.exit(0); });
  process.stdout.write(`ready ${ports.join(' ')}\n`);
}

interface Result { p50: number; p99: number; gbps: number }

async function measure(port: number, size: number, n: number, op: 'get' | 'put'): Promise<Result> {
  const payload = Buffer.alloc(size, 3);
  const key = (c: number, i: number) => op === 'get' ? `obj-${size}` : `put-${size}-${c}-${i}-${process.hrtime.bigint()}`;
  const prep = await LmClient.connect('127.0.0.1', port, 'v1', { timeoutMs: 30_000 });
  prep.put(`obj-${size}`, payload, { fmt: 1, dtype: 3, location: 0, shape: [1, size, 1, 1] });
  await prep.health();
  const once = async (c: LmClient, ci: number, i: number) => {
    const t0 = performance.now();
    if (op === 'get') {
      const r = await c.get(key(ci, i));
      if (!r || r.payload.length !== size) throw new Error(`GET returned ${r?.payload.length} bytes, expected ${size}`);
    } else {
      c.put(key(ci, i), payload);
      await c.health();
    }
    return performance.now() - t0;
  };
  // latency: one connection, one request at a time
  for (let i = 0; i < 5; i++) await once(prep, 0, -i - 1);
  const lat: number[] = [];
  for (let i = 0; i < n; i++) lat.push(await once(prep, 0, i));
  prep.close();
  // throughput: CONNS connections in parallel
  const conns = await Promise.all(Array.from({ length: CONNS }, () => LmClient.connect('127.0.0.1', port, 'v1', { timeoutMs: 30_000 })));
  const t0 = performance.now();
  await Promise.all(conns.map(async (c, ci) => { for (let i = 0; i < n; i++) await once(c, ci + 1, i); }));
  const ms = performance.now() - t0;
  for (const c of conns) c.close();
  return { p50: pct(lat, 50), p99: pct(lat, 99), gbps: (CONNS * n * size) / (ms / 1000) / 1e9 };
}

async function main(): Promise<void> {
  const child = spawn(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url), '--serve'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const ports = await new Promise<number[]>((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      const m = /ready ([\d ]+)\n/.exec(out);
      if (m) resolve(m[1]!.trim().split(' ').map(Number));
    });
    child.on('exit', (c) => reject(new Error(`server child exited ${c}`)));
  });
  const [kv, kvConcat, kvCork, raw] = ports as [number, number, number, number];
  try {
    const rows: (string | number)[][] = [];
    const wrows: (string | number)[][] = [];
    const f = (x: number) => x.toFixed(3);
    for (const [size, n0] of SIZES) {
      const n = Math.max(10, Math.round(n0 * scale));
      for (const op of ['get', 'put'] as const) {
        const c = await measure(raw, size, n, op);
        const k = await measure(kv, size, n, op);
        rows.push([humanBytes(size), op.toUpperCase(), n, f(k.p50), f(k.p99), f(c.p50), f(c.p99), ratio(c.p50, k.p50), k.gbps.toFixed(2), c.gbps.toFixed(2), ratio(k.gbps, c.gbps)]);
      }
      const a = await measure(kvConcat, size, n, 'get');
      const b = await measure(kvCork, size, n, 'get');
      wrows.push([humanBytes(size), f(a.p50), f(b.p50), a.gbps.toFixed(2), b.gbps.toFixed(2), ratio(a.gbps, b.gbps)]);
    }
    process.stdout.write(`lm:// (v1 headers, loopback, Node client; kvstash DRAM tier) vs ceiling = raw TCP server of the same frames, same run${quick ? ' (quick)' : ''}\n`);
    process.stdout.write(formatTable(['size', 'op', 'n', 'kvs p50 ms', 'kvs p99 ms', 'raw p50 ms', 'raw p99 ms', 'p50 raw/kvs', `kvs GB/s (${CONNS} conns)`, 'raw GB/s', 'GB/s kvs/raw'], rows) + '\n\n');
    process.stdout.write('GET reply write strategy (kvstash, same run): one concatenated buffer vs cork + 2 writes + uncork (writev)\n');
    process.stdout.write(formatTable(['size', 'concat p50 ms', 'cork p50 ms', 'concat GB/s', 'cork GB/s', 'concat/cork'], wrows) + '\n');
  } finally {
    child.kill('SIGTERM');
  }
}

if (process.argv.includes('--serve')) void serve();
else main().catch((err) => { process.stderr.write(String(err?.stack ?? err) + '\n'); process.exit(1); });
