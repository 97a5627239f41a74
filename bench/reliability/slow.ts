/**
 * Slow senders on every listener — lm://, the data socket's tcp endpoint, gRPC and /metrics — while honest
 * clients keep asking each of them; then the lm:// memory-cap attack: 23 connections each sending most of a
 * 64 MiB PUT and stalling, then closing. Targets: every honest request answered, the lm:// tricklers closed by
 * the server at their header deadline, the buffered bytes never over the cap and released when the senders
 * close, the sidecar's RSS bounded. (The request deadline itself is tested in test/integration/lmcache-limits.)
 */
import net from 'node:net';
import { request } from 'node:http';
import { LmClient } from '../../adapters/lmcache/client.js';
import { encodeClientHeader } from '../../adapters/lmcache/protocol.js';
import { KvstashClient } from '../../connector/client.js';
import { ControlClient } from '../../connector/control/grpc-client.js';
import { MiB, rssOf, serve, sleep, tempDir, until, verdict, type Row } from './common.js';

const CAP = 256 * MiB;

function trickle(host: string, port: number, bytes: Buffer, everyMs: number): { closedByServer: () => boolean; destroy: () => void } {
  let closed = false;
  let mine = false;
  let i = 0;
  const sock = net.connect({ host, port });
  sock.on('error', () => undefined);
  sock.on('data', () => undefined);
  const timer = setInterval(() => { if (!sock.destroyed) sock.write(bytes.subarray(i % bytes.length, (i++ % bytes.length) + 1)); }, everyMs);
  sock.on('close', () => { closed = true; clearInterval(timer); });
  return { closedByServer: () => closed && !mine, destroy: () => { mine = !closed; clearInterval(timer); sock.destroy(); } };
}

function scrape(address: string): Promise<number> {
  const i = address.lastIndexOf(':');
  return new Promise((resolve, reject) => {
    const req = request({ host: address.slice(0, i), port: Number(address.slice(i + 1)), path: '/metrics', timeout: 10_000 }, (res) => { res.resume(); res.on('end', () => resolve(res.statusCode!)); });
    req.on('error', reject);
    req.end();
  });
}

export async function slowSenders(_seed: number): Promise<Row[]> {
  const dir = tempDir('slow');
  const s = await serve(dir, ['--endpoints', 'tcp://127.0.0.1:0', '--file-root', `${dir}/tier`, '--dram-bytes', '64MiB', '--grpc', '127.0.0.1:0', '--metrics', '127.0.0.1:0',
    '--lmcache', '127.0.0.1:0', '--lmcache-max-buffered-bytes', String(CAP), '--lmcache-stall-ms', '2000', '--lmcache-request-ms', '120000'], { KVSTASH_LOG_LEVEL: 'info' });
  const lmPort = Number((await s.waitFor(/lm:\/\/127\.0\.0\.1:(\d+)/))[1]);
  const tcpPort = Number((await s.waitFor(/tcp:\/\/127\.0\.0\.1:(\d+)/))[1]);
  const grpcAddr = (await s.waitFor(/"address":"(127\.0\.0\.1:\d+)","tls"/))[1]!;
  const metricsAddr = (await s.waitFor(/"address":"(127\.0\.0\.1:\d+)","msg":"metrics listening/))[1]!;
  const lm = await LmClient.connect('127.0.0.1', lmPort, 'v1', { timeoutMs: 10_000 });
  lm.put('honest', Buffer.alloc(4096, 7));
  const data = new KvstashClient(`tcp://127.0.0.1:${tcpPort}`, { timeoutMs: 10_000 });
  const grpc = new ControlClient(grpcAddr, { deadlineMs: 10_000 });
  const header = encodeClientHeader('v1', { command: 1, length: 1 << 20, key: 'slow', fmt: 1, dtype: 2, location: 0, shape: [0, 0, 0, 0] });
  const zmtp = Buffer.from([0xff, 0, 0, 0, 0, 0, 0, 0, 1, 0x7f, 3, 0, ...Buffer.from('NULL'), ...Buffer.alloc(16), 0, ...Buffer.alloc(31)]);
  const base = rssOf(s.pid).rss;
  const attackers = {
    lm: Array.from({ length: 500 }, () => trickle('127.0.0.1', lmPort, header, 200)),
    data: Array.from({ length: 100 }, () => trickle('127.0.0.1', tcpPort, zmtp, 200)),
    grpc: Array.from({ length: 100 }, () => trickle('127.0.0.1', Number(grpcAddr.split(':')[1]), Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0'), 200)),
    http: Array.from({ length: 100 }, () => trickle('127.0.0.1', Number(metricsAddr.split(':')[1]), Buffer.from('GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'), 200)),
  };
  let probes = 0;
  let failures = 0;
  let wrong = 0;
  let worstMs = 0;
  const t0 = Date.now();
  while (Date.now() - t0 < 8000) {
    const p0 = Date.now();
    const res = await Promise.allSettled([
      lm.get('honest').then((g) => { if (!g || !g.payload.equals(Buffer.alloc(4096, 7))) wrong += 4096; }),
      data.ping(), grpc.health(), scrape(metricsAddr).then((code) => { if (code !== 200) throw new Error(`HTTP ${code}`); }),
    ]);
    probes += res.length;
    failures += res.filter((x) => x.status === 'rejected').length;
    worstMs = Math.max(worstMs, Date.now() - p0);
    await sleep(250);
  }
  const closed = Object.fromEntries(Object.entries(attackers).map(([k, v]) => [k, v.filter((a) => a.closedByServer()).length]));
  const attackRss = rssOf(s.pid).rss;
  for (const v of Object.values(attackers)) for (const a of v) a.destroy();
  const slowRow: Row = {
    attack: 'slow senders: 500 lm://, 100 data tcp, 100 gRPC, 100 HTTP', count: 800, wrongBytes: wrong, lost: '-', peakRssMiB: s.peakMiB(),
    verdict: verdict(failures === 0 && wrong === 0 && closed.lm! >= 475 && attackRss - base < 256),
    note: `${probes} honest requests, ${failures} failed, worst round ${worstMs} ms; closed by the server: lm ${closed.lm}/500, data ${closed.data}/100, gRPC ${closed.grpc}/100, HTTP ${closed.http}/100; RSS +${(attackRss - base).toFixed(0)} MiB`,
  };

  // The memory cap: 23 stalled PUTs of 64 MiB, 48 MiB of each sent.
  const before = rssOf(s.pid).peak;
  const stats = async () => (await data.request({ op: 'LMCACHE_STATS' })).header.lmcache as Record<string, number>;
  const chunk = Buffer.alloc(48 * MiB, 0x5a);
  const conns = await Promise.all(Array.from({ length: 23 }, (_, i) => new Promise<net.Socket>((resolve) => {
    const sock = net.connect({ host: '127.0.0.1', port: lmPort }, () => resolve(sock));
    sock.on('error', () => undefined);
    sock.write(encodeClientHeader('v1', { command: 1, length: 64 * MiB, key: `big-${i}`, fmt: 1, dtype: 2, location: 0, shape: [0, 0, 0, 0] }));
    sock.write(chunk);
  })));
  const t0s = await stats();
  // Every stalled PUT is either held (48 MiB buffered) or refused: the cap's arithmetic decides which.
  await until(async () => {
    const st = await stats();
    return st.refusedPuts! - t0s.refusedPuts! + Math.floor(st.buffered_bytes! / (48 * MiB)) >= 23 || st.timeouts! - t0s.timeouts! >= 23;
  }, 120_000, 'the stalled PUTs held or refused');
  const st1 = await stats();
  const peakAfter = rssOf(s.pid).peak;
  // The senders go away: every buffered byte must be released.
  for (const c of conns) c.destroy();
  await until(async () => (await stats()).buffered_bytes === 0, 60_000, 'buffered bytes released after the senders closed');
  const st2 = await stats();
  lm.close();
  data.close();
  grpc.close();
  await s.stop();
  const growth = peakAfter - before;
  return [slowRow, {
    attack: 'lm:// memory cap: 23 stalled 64 MiB PUTs', count: 23, wrongBytes: 0, lost: '-', peakRssMiB: peakAfter,
    verdict: verdict(st2.buffered_peak_bytes! <= CAP && growth < CAP / MiB + 256),
    note: `cap ${CAP / MiB} MiB; peak buffered ${(st2.buffered_peak_bytes! / MiB).toFixed(0)} MiB; ${st1.refusedPuts! - t0s.refusedPuts!} PUTs refused; ${(st1.buffered_bytes! / MiB).toFixed(0)} MiB held when all had sent, 0 after they closed; peak RSS +${growth.toFixed(0)} MiB (issue: 134 MiB → 6 GiB)`,
  }];
}
