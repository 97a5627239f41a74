/**
 * RESP front benchmark (issue 11): `redis-benchmark -t set,get -d <size> -P 16` against kvstash's RESP port
 * (DRAM tier, a sidecar in a child process: this file with --serve) and against a real `redis-server`
 * (`--save '' --appendonly no`) started in the same run, rounds alternating between the two; the table gives
 * the median requests/s of each and the ratio kvstash / Redis. Goals: ≥ 1.0× at 256 KiB, ≥ 0.7× at 4 KiB.
 * The DRAM tier is the default one, the shared-memory arena (arenaDir /dev/shm); `--heap-dram` adds a second
 * kvstash whose DRAM tier is the heap (arenaDir ''), measured in the same rounds, for comparison.
 *
 * Needs Debian's redis-server and redis-tools (scripts/test-prereqs.mjs installs them).
 * `--keyspace=N` passes `-r N` to redis-benchmark (random keys out of N instead of one key for every command: the
 * fairer figure, since a single key lets both servers overwrite and re-read one value in place).
 * `--quick` runs one round with fewer requests.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { loadConfig } from '../connector/config.js';
import { AccessPolicy } from '../connector/control/auth.js';
import { Sidecar } from '../connector/server/sidecar.js';
import { RespServer } from '../adapters/resp/server.js';
import { formatTable, humanBytes, median, quick, ratio, startChild } from './util.js';

const CASES: { size: number; requests: number; goal: number }[] = [
  { size: 256 << 10, requests: quick ? 2000 : 8000, goal: 1.0 },
  { size: 4 << 10, requests: quick ? 50_000 : 200_000, goal: 0.7 },
];
const ROUNDS = quick ? 1 : 3;
const CLIENTS = 50;
const PIPELINE = 16;

const heapDram = process.argv.includes('--heap-dram');
const keyspaceArg = process.argv.find((a) => a.startsWith('--keyspace='))?.slice(11);
const KEYSPACE = keyspaceArg === undefined ? 0 : Number(keyspaceArg);
if (!Number.isInteger(KEYSPACE) || KEYSPACE < 0) throw new Error(`--keyspace must be a whole number, got ${keyspaceArg}`);

async function serve(heap: boolean): Promise<void> {
  const config = loadConfig({
    endpoints: [`ipc:///tmp/kvstash-bench-resp-${process.pid}.sock`], fileRoot: '', dramBytes: '4GiB', logLevel: 'warn', ...(heap ? { arenaDir: '' } : {}),
  }, {});
  if (!heap && !config.arenaDir) throw new Error('no shared-memory arena folder (/dev/shm) on this host: the arena DRAM tier cannot be measured');
  const sidecar = new Sidecar(config);
  const resp = new RespServer({ listen: [{ host: '127.0.0.1', port: 0 }], policy: new AccessPolicy() });
  sidecar.use(resp);
  await sidecar.start();
  process.stdout.write(`ready ${resp.bound[0]!.port}\n`);
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

async function startRedis(): Promise<{ proc: ChildProcess; port: number }> {
  const port = await freePort();
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--protected-mode', 'no'], { stdio: 'ignore' });
  for (let i = 0; i < 200; i++) {
    if (spawnSync('redis-cli', ['-p', String(port), 'ping'], { encoding: 'utf8' }).stdout.includes('PONG')) return { proc, port };
    await new Promise((r) => setTimeout(r, 50));
  }
  proc.kill('SIGKILL');
  throw new Error('redis-server did not answer PING within 10 s');
}

/** requests/s per test from one redis-benchmark run (--csv). */
function redisBenchmark(port: number, size: number, requests: number, retried = false): Record<string, number> {
  const r = spawnSync('redis-benchmark', ['-h', '127.0.0.1', '-p', String(port), '-t', 'set,get', '-d', String(size), '-P', String(PIPELINE),
    '-c', String(CLIENTS), '-n', String(requests), ...(KEYSPACE ? ['-r', String(KEYSPACE)] : []), '--csv'], { encoding: 'utf8', timeout: 300_000 });
  if (r.status !== 0) {
    // A loaded machine can drop a connection at start-up (accept queue, SYN retries): one retry, then fail.
    if (!retried) return redisBenchmark(port, size, requests, true);
    throw new Error(`redis-benchmark against port ${port} failed twice (${r.status}): ${r.stderr}`);
  }
  const out: Record<string, number> = {};
  for (const line of r.stdout.split('\n')) {
    const m = /^"(SET|GET)","([\d.]+)"/.exec(line);
    if (m) out[m[1]!] = Number(m[2]);
  }
  if (!out.SET || !out.GET) throw new Error(`no SET/GET figures in redis-benchmark's output:\n${r.stdout}`);
  return out;
}

type Who = 'redis' | 'kvstash' | 'heap';

async function main(): Promise<void> {
  if (spawnSync('redis-benchmark', ['--version']).status !== 0) throw new Error('redis-benchmark not found: run scripts/test-prereqs.mjs (installs redis-tools)');
  const script = new URL(import.meta.url).pathname;
  const kv = await startChild(script, ['--serve'], /ready \d+/);
  const heap = heapDram ? await startChild(script, ['--serve', '--heap'], /ready \d+/) : undefined;
  const port = (c: { out: () => string }) => Number(/ready (\d+)/.exec(c.out())![1]);
  const redis = await startRedis();
  const targets: [Who, number][] = [['redis', redis.port], ['kvstash', port(kv)]];
  if (heap) targets.push(['heap', port(heap)]);
  const rows: (string | number)[][] = [];
  try {
    for (const c of CASES) {
      const samples: Record<Who, Record<string, number[]>> = { redis: { SET: [], GET: [] }, kvstash: { SET: [], GET: [] }, heap: { SET: [], GET: [] } };
      for (let i = 0; i < ROUNDS; i++) {
        for (const [who, p] of targets) {
          const r = redisBenchmark(p, c.size, c.requests);
          samples[who].SET!.push(r.SET!);
          samples[who].GET!.push(r.GET!);
        }
      }
      for (const t of ['SET', 'GET']) {
        const rd = median(samples.redis[t]!);
        const kvs = median(samples.kvstash[t]!);
        const spread = (xs: number[]) => `${Math.round(Math.min(...xs))}–${Math.round(Math.max(...xs))}`;
        const row: (string | number)[] = [t, humanBytes(c.size), ROUNDS, Math.round(rd), spread(samples.redis[t]!), Math.round(kvs), spread(samples.kvstash[t]!), ratio(kvs, rd)];
        if (heap) {
          const h = median(samples.heap[t]!);
          row.push(Math.round(h), ratio(h, rd));
        }
        rows.push([...row, `≥ ${c.goal.toFixed(1)}`]);
      }
    }
  } finally {
    kv.proc.kill('SIGKILL');
    heap?.proc.kill('SIGKILL');
    redis.proc.kill('SIGKILL');
  }
  process.stdout.write(`redis-benchmark -c ${CLIENTS} -P ${PIPELINE}${KEYSPACE ? ` -r ${KEYSPACE}` : ' (one key)'} (requests/s, median of rounds; ceiling: redis-server ${spawnSync('redis-server', ['--version'], { encoding: 'utf8' }).stdout.match(/v=([\d.]+)/)?.[1] ?? '?'} in the same run; kvstash: DRAM tier = shared-memory arena${heap ? ', heap: DRAM tier = heap' : ''})\n`);
  const head = ['test', 'value', 'rounds', 'redis rps', 'redis spread', 'kvstash rps', 'kvstash spread', 'kvstash/redis'];
  if (heap) head.push('heap rps', 'heap/redis');
  process.stdout.write(formatTable([...head, 'goal'], rows) + '\n');
}

if (process.argv.includes('--serve')) await serve(process.argv.includes('--heap'));
else await main();
