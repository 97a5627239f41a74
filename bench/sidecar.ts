/**
 * Sidecar data-path benchmark (issue 2): PUT and GET throughput of 256 KiB, 2 MiB and 32 MiB blocks (DRAM
 * hits) against a raw ZeroMQ DEALER/ROUTER (bench/raw-router.ts) on the same transport, measured in the
 * same run; LOOKUP round-trip latency (64-byte and 8,192-block chains) against a raw echo; the in-sidecar
 * cost of an 8,192-block LOOKUP. Both servers run as child processes; the client runs here with the same
 * pipelining window for both.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Dealer } from 'zeromq';
import { KvstashClient } from '../connector/client.js';
import { loadConfig } from '../connector/config.js';
import { Sidecar, storageKeys } from '../connector/server/sidecar.js';
import { decodeRequest, encodeReply, encodeRequest } from '../protocol/codec.js';
import { formatTable, here, median, pct, quick, ratio, startChild } from './util.js';

const WINDOW = 4;
const NSD = { model: 'bench', engine: 'bench', layout: 'raw', tp_rank: 0, tp_size: 1, pp_rank: 0, pp_size: 1, tenant: 'default' };
const SIZES: [string, number, number][] = [['256 KiB', 256 << 10, 1600], ['2 MiB', 2 << 20, 240], ['32 MiB', 32 << 20, 20]];
const scale = quick ? 0.25 : 1;

class RawClient {
  readonly sock = new Dealer({ linger: 0, sendHighWaterMark: 100_000, receiveHighWaterMark: 100_000 });
  constructor(ep: string) { this.sock.connect(ep); }
  async run(n: number, frames: () => Buffer[]): Promise<void> {
    let sent = 0;
    let got = 0;
    const recv = (async () => { for await (const _ of this.sock) { if (++got >= n) break; } })();
    while (sent < n) {
      while (sent - got >= WINDOW) await new Promise((r) => setImmediate(r));
      await this.sock.send(frames());
      sent++;
    }
    await recv;
  }
  async rtt(frames: Buffer[]): Promise<number> {
    const t0 = performance.now();
    await this.sock.send(frames);
    await this.sock.receive();
    return performance.now() - t0;
  }
  close() { this.sock.close(); }
}

async function pipelined(n: number, op: () => Promise<unknown>): Promise<void> {
  const inflight = new Set<Promise<unknown>>();
  for (let i = 0; i < n; i++) {
    const p = op().finally(() => inflight.delete(p));
    inflight.add(p);
    if (inflight.size >= WINDOW) await Promise.race(inflight);
  }
  await Promise.all(inflight);
}

const gbps = (bytes: number, ms: number) => bytes / (ms / 1000) / 1e9;

async function main() {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'kvstash-bench-'));
  const transports = [['ipc', (n: string) => `ipc://${path.join(dir, n)}`], ['tcp', () => 'tcp://127.0.0.1:0']] as const;
  const rows: (string | number)[][] = [];
  const latRows: (string | number)[][] = [];
  for (const [tname, ep] of transports) {
    const kv = await startChild(path.join(here, '..', 'cli', 'kvstash.js'), ['serve', '--endpoints', ep('kv.sock'), '--file-root', '', '--dram-bytes', '12GiB', '--log-level', 'warn', '--grpc', '', '--metrics', ''], /listening on (\S+)/);
    const raw = await startChild(path.join(here, 'raw-router.js'), [ep('raw.sock')], /ready (\S+)/);
    const kvEp = /listening on (\S+?)(,|\n)/.exec(kv.out())![1]!;
    const rawEp = /ready (\S+)/.exec(raw.out())![1]!;
    const client = new KvstashClient(kvEp, { timeoutMs: 60_000 });
    const rc = new RawClient(rawEp);
    const ns = await client.hello(NSD);
    try {
      for (const [label, size, n0] of SIZES) {
        const n = Math.max(4, Math.round(n0 * scale));
        const block = Buffer.alloc(size, 7);
        const best = { kvPut: 0, rawPut: 0, keepPut: 0, kvGet: 0, rawGet: 0 };
        for (let rep = 0; rep < 3; rep++) {
          const keys = Array.from({ length: n }, () => randomBytes(32));
          let i = 0;
          let t0 = performance.now();
          await pipelined(n, () => client.put(ns, keys[i++]!, [block]));
          best.kvPut = Math.max(best.kvPut, gbps(n * size, performance.now() - t0));
          t0 = performance.now();
          await rc.run(n, () => [Buffer.from('p'), block]);
          best.rawPut = Math.max(best.rawPut, gbps(n * size, performance.now() - t0));
          t0 = performance.now();
          await rc.run(n, () => [Buffer.from('k'), block]);
          best.keepPut = Math.max(best.keepPut, gbps(n * size, performance.now() - t0));
          const hot = keys.slice(0, 8);
          i = 0;
          t0 = performance.now();
          await pipelined(n, () => client.get(ns, hot[i++ % hot.length]!));
          best.kvGet = Math.max(best.kvGet, gbps(n * size, performance.now() - t0));
          t0 = performance.now();
          await rc.run(n, () => [Buffer.from(`g${size}`)]);
          best.rawGet = Math.max(best.rawGet, gbps(n * size, performance.now() - t0));
          for (let j = 0; j < keys.length; j += 256) await client.delete(ns, Buffer.concat(keys.slice(j, j + 256)));
        }
        rows.push([`PUT ${label}`, tname, best.kvPut.toFixed(2), best.rawPut.toFixed(2), ratio(best.kvPut, best.rawPut), best.keepPut.toFixed(2), ratio(best.kvPut, best.keepPut)]);
        rows.push([`GET ${label}`, tname, best.kvGet.toFixed(2), best.rawGet.toFixed(2), ratio(best.kvGet, best.rawGet), '', '']);
      }
      // Round-trip latency: a 64-byte LOOKUP (2 keys) and an 8,192-block chain, against a raw echo of the same header.
      for (const nk of [2, 8192]) {
        const keys = Array.from({ length: nk }, () => randomBytes(32));
        await client.put(ns, keys.slice(0, Math.min(nk, 8192)), keys.map(() => Buffer.alloc(16)));
        const kb = Buffer.concat(keys);
        const reps = quick ? 300 : 2000;
        const kvLat: number[] = [];
        const rawLat: number[] = [];
        const echo = encodeRequest({ id: 1, op: 'LOOKUP', ns, keys: kb });
        for (let r = 0; r < reps; r++) {
          let t0 = performance.now();
          await client.lookup(ns, kb);
          kvLat.push(performance.now() - t0);
          rawLat.push(await rc.rtt([Buffer.from('e'), echo[0]!]));
          t0 = performance.now();
        }
        latRows.push([`LOOKUP ${nk === 2 ? '64-byte' : '8,192 blocks'}`, tname, median(kvLat).toFixed(3), pct(kvLat, 99).toFixed(3), median(rawLat).toFixed(3), pct(rawLat, 99).toFixed(3)]);
      }
    } finally {
      client.close();
      rc.close();
      kv.proc.kill('SIGKILL');
      raw.proc.kill('SIGKILL');
    }
  }
  process.stdout.write(`Throughput, GB/s (best of 3; window ${WINDOW}; DRAM hits; target ratio ≥ 0.9)\n`);
  process.stdout.write(formatTable(['op', 'transport', 'kvstash', 'raw zmq', 'ratio', 'raw zmq, keeps blocks', 'ratio'], rows) + '\n');
  process.stdout.write('"raw zmq, keeps blocks": the same bare server holding on to every block it receives, as a store must.\n\n');
  process.stdout.write('Round-trip latency, ms (sequential requests)\n');
  process.stdout.write(formatTable(['request', 'transport', 'kvstash p50', 'kvstash p99', 'raw echo p50', 'raw echo p99'], latRows) + '\n\n');
  await inSidecarLookup(dir);
  rmSync(dir, { recursive: true, force: true });
}

/** Time spent inside the sidecar on an 8,192-block LOOKUP: decode, key strings, index walk, encode. */
async function inSidecarLookup(dir: string) {
  const sc = new Sidecar(loadConfig({ endpoints: [`ipc://${path.join(dir, 'in.sock')}`], fileRoot: '', dramBytes: '1GiB', logLevel: 'silent' }, {}));
  await sc.start();
  const ns = sc.registerNamespace(NSD);
  const keys = Array.from({ length: 8192 }, () => randomBytes(32));
  const sk = storageKeys(ns, Buffer.concat(keys));
  sk.forEach((k) => sc.tiers.put(k, Buffer.alloc(16)));
  const frames = encodeRequest({ id: 1, op: 'LOOKUP', ns, keys: Buffer.concat(keys) });
  const lat: number[] = [];
  for (let i = 0; i < (quick ? 500 : 3000); i++) {
    const t0 = performance.now();
    const { header } = decodeRequest(frames, sc.limits);
    const r = sc.tiers.lookupRaw(ns, (header as { keys: Buffer }).keys);
    encodeReply({ id: 1, hit: r.hit, tiers: r.tiers, load_ms: r.loadMs });
    lat.push(performance.now() - t0);
  }
  await sc.stop();
  process.stdout.write('In-sidecar LOOKUP of an 8,192-block chain, ms (decode + index walk + encode; target p99 < 1 ms)\n');
  process.stdout.write(formatTable(['p50', 'p99', 'max'], [[median(lat).toFixed(3), pct(lat, 99).toFixed(3), Math.max(...lat).toFixed(3)]]) + '\n');
}

await main();
process.exit(0);
