/**
 * The vLLM KV-events index against a real Python publisher (test/integration/py/kv_event_publisher.py:
 * pyzmq PUB-compatible socket + ROUTER replay, hashes from cbor2 + hashlib), over real ZeroMQ on loopback.
 * Expected resident sets are computed from what the publisher reports it published, never hard-coded.
 */
import test from 'ava';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { Router } from 'zeromq';
import { KvstashClient } from '../../connector/client.js';
import { loadConfig } from '../../connector/config.js';
import { Sidecar } from '../../connector/server/sidecar.js';
import { VLLM_EVENTS_SETTINGS } from '../../adapters/vllm/cli-extension.js';
import { VllmEventsPlugin } from '../../adapters/vllm/events-plugin.js';
import type { VllmEventsIndexOptions } from '../../adapters/vllm/events-index.js';
import type { StreamStats } from '../../adapters/vllm/event-stream.js';
import { ErrorCode } from '../../protocol/errors.js';
import { rootLogger } from '../../connector/log.js';
import { killAndWait, repoRoot, spawnSidecar, tempDir, uniqueIpc } from '../helpers/sidecar.js';

rootLogger('error'); // the expected warnings (failed replay, undecodable batch) would only be noise here

const PY = process.env.KVSTASH_PYTHON || '/usr/bin/python3';
const SCRIPT = path.join(repoRoot, 'test', 'integration', 'py', 'kv_event_publisher.py');

type Reply = Record<string, unknown> & { seq?: number; hashes?: string[]; error?: string };

/** One Python publisher process; `cmd` sends a JSON command and waits (with a deadline) for its reply line. */
class Publisher {
  private readonly lines: string[] = [];
  private waiter: (() => void) | undefined;
  private constructor(readonly proc: ChildProcess, readonly pub: string, readonly replay: string) {}

  static async start(args: string[], t: { teardown: (fn: () => Promise<void>) => void }): Promise<Publisher> {
    const proc = spawn(PY, [SCRIPT, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    t.teardown(() => killAndWait(proc));
    const rl = createInterface({ input: proc.stdout! });
    let err = '';
    proc.stderr!.on('data', (d) => { err += d; });
    const first = new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`publisher did not start within 10 s: ${err}`)), 10_000);
      rl.once('line', (l) => { clearTimeout(timer); resolve(l); });
      proc.once('exit', (code) => { clearTimeout(timer); reject(new Error(`publisher exited ${code}: ${err}`)); });
    });
    const hello = JSON.parse(await first) as { pub: string; replay: string };
    const p = new Publisher(proc, hello.pub, hello.replay);
    rl.on('line', (l) => { p.lines.push(l); p.waiter?.(); });
    return p;
  }

  async cmd(c: Record<string, unknown>): Promise<Reply> {
    this.proc.stdin!.write(JSON.stringify(c) + '\n');
    const deadline = Date.now() + 10_000;
    while (this.lines.length === 0) {
      if (Date.now() > deadline) throw new Error(`publisher gave no reply to ${JSON.stringify(c)}`);
      await new Promise<void>((r) => { this.waiter = r; setTimeout(r, 100); });
    }
    const reply = JSON.parse(this.lines.shift()!) as Reply;
    if (reply.error) throw new Error(`publisher: ${reply.error}`);
    return reply;
  }
}

const range = (from: number, n: number) => Array.from({ length: n }, (_, i) => from + i);
const P1 = range(1, 64); // 4 blocks
const P2 = [...P1.slice(0, 32), ...range(1000, 40)]; // shares 2 blocks with P1, 4 full blocks
const P3 = range(5000, 32);
const big = (r: Reply) => r.hashes!.map(BigInt);
const sorted = (xs: Iterable<bigint>) => [...xs].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));

async function until(what: string, pred: () => boolean, ms = 8000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function startIndexSidecar(t: { teardown: (fn: () => Promise<void> | void) => void }, opts: VllmEventsIndexOptions) {
  const dir = tempDir();
  const endpoint = uniqueIpc(dir);
  const config = loadConfig({ endpoints: [endpoint], fileRoot: '', dramBytes: '16MiB', logLevel: 'silent' }, {}, undefined, VLLM_EVENTS_SETTINGS);
  const sidecar = new Sidecar(config);
  const plugin = new VllmEventsPlugin(opts);
  sidecar.use(plugin);
  await sidecar.start();
  const client = new KvstashClient(endpoint, { timeoutMs: 5000 });
  t.teardown(async () => {
    client.close();
    await sidecar.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  const stream = (i = 0): StreamStats => plugin.index.streamStats()[i]!;
  const synced = (seq: number, i = 0) => until(`seq ${seq} on stream ${i}`, () => stream(i).last_seq === String(seq));
  return { endpoint, client, index: plugin.index, stream, synced };
}

test('vllm-events integration - late join, gaps, replay, undecodable batch and restart keep the index exact', async (t) => {
  const pub = await Publisher.start(['--topic', 'kv-events', '--buffer-steps', '100'], t);
  // seq 0 goes out before anyone subscribes: the index must fetch it by replay when it joins
  const s0 = await pub.cmd({ cmd: 'store', tokens: P1, last_block: 2, encoding: 'map-events' });
  const { endpoint, client, index, stream, synced } = await startIndexSidecar(t, { publishers: [{ endpoint: pub.pub, replay: pub.replay }], topic: 'kv' });
  t.is((await pub.cmd({ cmd: 'wait_subscribers' })).subscribed, 1);
  const s1 = await pub.cmd({ cmd: 'store', tokens: P1, first_block: 2, encoding: 'array-events' });
  await synced(1);
  const resident = () => sorted(index.residency.resident(pub.pub));
  t.deepEqual(resident(), sorted([...big(s0), ...big(s1)]));
  t.is(stream().replays, 1);

  // a batch only in the replay buffer (a gap), then a removal carrying raw digests
  const s2 = await pub.cmd({ cmd: 'store', tokens: P2, first_block: 2, encoding: 'map-envelope', skip_live: true });
  await pub.cmd({ cmd: 'remove', tokens: P1, blocks: [3], hash_form: 'bytes', encoding: 'array-events' });
  const s4 = await pub.cmd({ cmd: 'store', tokens: P3, lora: 'alpaca', hash_form: 'bytes', encoding: 'map-events' });
  await synced(4);
  const p1 = [...big(s0), ...big(s1)];
  t.deepEqual(resident(), sorted([p1[0]!, p1[1]!, p1[2]!, ...big(s2), ...big(s4)]));
  t.like(stream(), { gaps: 1, replays: 2, resyncs: 0, restarts: 0, decode_errors: 0 });

  const engines = async (tokens: number[], extra: Record<string, unknown> = {}) => (await client.request({ op: 'ENGINES', tokens, ...extra })).header;
  const hit = async (tokens: number[], extra: Record<string, unknown> = {}) => ((await engines(tokens, extra)).engines as { hit_blocks: number }[])[0]!.hit_blocks;
  t.is(await hit(P1), 3);
  t.is(await hit(P2), 4);
  t.is(await hit(P3, { lora: 'alpaca' }), 2);
  t.is(await hit(P3), 0);
  t.is(await hit(P3, { lora: 'alpaca', cache_salt: 'x' }), 0);
  const answer = await engines(P2);
  t.like(answer, { blocks: 4, block_size: 16 });
  t.deepEqual(answer.engines, [{ engine: pub.pub, dp_rank: 0, hit_blocks: 4, hit_tokens: 64, blocks: 7 }]);
  const bad = await t.throwsAsync(client.request({ op: 'ENGINES', tokens: [1, -2] }));
  t.is((bad as { code?: string }).code, ErrorCode.BAD_FIELD);

  // the CLI, as a separate process
  const cli = await new Promise<string>((resolve, reject) => {
    execFile(process.execPath, ['--import=tsx', path.join(repoRoot, 'cli', 'kvstash.ts'), 'lookup', '--engines', '--json', '--endpoint', endpoint, '--tokens', P2.join(',')],
      { cwd: repoRoot, timeout: 20_000 }, (err, out, errOut) => (err ? reject(new Error(`${err.message}\n${errOut}`)) : resolve(out)));
  });
  const parsed = JSON.parse(cli) as { blocks: number; engines: unknown[] };
  t.is(parsed.blocks, 4);
  t.deepEqual(parsed.engines, [{ engine: pub.pub, dp_rank: 0, hit_blocks: 4, hit_tokens: 64, blocks: 7 }]);

  // an undecodable batch drops the engine's state; later batches rebuild it
  await pub.cmd({ cmd: 'garbage' });
  const s6 = await pub.cmd({ cmd: 'store', tokens: P1, last_block: 2 });
  await synced(6);
  t.deepEqual(resident(), sorted(big(s6)));
  t.is(stream().decode_errors, 1);

  // publisher restart: seq back to 0 → state dropped, then the new incarnation's events
  await pub.cmd({ cmd: 'restart' });
  await pub.cmd({ cmd: 'clear', encoding: 'map-envelope' });
  const r1 = await pub.cmd({ cmd: 'store', tokens: P2, encoding: 'array-events' });
  await synced(1);
  t.deepEqual(resident(), sorted(big(r1)));
  t.is(stream().restarts, 1);
  t.is(await hit(P1), 2);
});

test('vllm-events integration - a gap older than the replay buffer resyncs; other media are kept apart', async (t) => {
  const pub = await Publisher.start(['--buffer-steps', '2'], t);
  const { index, stream, synced } = await startIndexSidecar(t, { publishers: [{ endpoint: pub.pub, replay: pub.replay }] });
  await pub.cmd({ cmd: 'wait_subscribers' });
  const a = await pub.cmd({ cmd: 'store', tokens: P1, last_block: 2 });
  await synced(0);
  t.deepEqual(sorted(index.residency.resident(pub.pub)), sorted(big(a)));
  const skipped: Reply[] = [];
  for (const b of [0, 1, 2]) skipped.push(await pub.cmd({ cmd: 'store', tokens: P2, first_block: b, last_block: b + 1, skip_live: true, encoding: 'array-events' }));
  const c = await pub.cmd({ cmd: 'store', tokens: P3 });
  await synced(4);
  // replay from 1 is answered from seq 3 (the buffer holds 2): state dropped, seqs 3 and 4 applied on the empty state
  const expected = sorted([...big(skipped[2]!), ...big(c)]);
  t.deepEqual(sorted(index.residency.resident(pub.pub)), expected);
  t.like(stream(), { gaps: 1, replays: 1, resyncs: 1 });
  const cpu = await pub.cmd({ cmd: 'store', tokens: P1, medium: 'CPU' });
  await synced(5);
  t.deepEqual(sorted(index.residency.resident(pub.pub, 0, 'CPU')), sorted(big(cpu)));
  t.deepEqual(sorted(index.residency.resident(pub.pub)), expected);
});

test('vllm-events integration - a replay that misses its deadline resyncs the engine and the stream goes on', async (t) => {
  const pub = await Publisher.start([], t);
  const silent = new Router({ linger: 0 }); // accepts replay requests and never answers
  await silent.bind('tcp://127.0.0.1:*');
  t.teardown(() => silent.close());
  const { index, stream, synced } = await startIndexSidecar(t, { publishers: [{ endpoint: pub.pub, replay: silent.lastEndpoint! }], replayTimeoutMs: 300 });
  await pub.cmd({ cmd: 'wait_subscribers' });
  await pub.cmd({ cmd: 'store', tokens: P1, last_block: 1 });
  await synced(0);
  await pub.cmd({ cmd: 'store', tokens: P1, first_block: 1, last_block: 2, skip_live: true });
  const started = Date.now();
  const live = await pub.cmd({ cmd: 'store', tokens: P2, first_block: 3 });
  await synced(2);
  t.true(Date.now() - started >= 250, 'waited for the replay deadline');
  t.like(stream(), { gaps: 1, replays: 1, replay_failures: 1, resyncs: 1 });
  t.deepEqual(sorted(index.residency.resident(pub.pub)), sorted(big(live)));
  const next = await pub.cmd({ cmd: 'store', tokens: P3 });
  await synced(3);
  t.deepEqual(sorted(index.residency.resident(pub.pub)), sorted([...big(live), ...big(next)]));
});

test('vllm-events integration - a restarted publisher process (sockets rebound, seq from 0) is followed after the SUB reconnects', async (t) => {
  const pub = await Publisher.start([], t);
  const { index, stream, synced } = await startIndexSidecar(t, { publishers: [{ endpoint: pub.pub, replay: pub.replay }] });
  await pub.cmd({ cmd: 'wait_subscribers' });
  await pub.cmd({ cmd: 'store', tokens: P1 });
  await pub.cmd({ cmd: 'store', tokens: P3 });
  await synced(1);
  await pub.cmd({ cmd: 'restart', rebind: true });
  t.is((await pub.cmd({ cmd: 'wait_subscribers' })).subscribed, 1);
  const fresh = await pub.cmd({ cmd: 'store', tokens: P2, last_block: 3, encoding: 'array-events' });
  await until('restart seen', () => stream().restarts === 1);
  await synced(0);
  t.deepEqual(sorted(index.residency.resident(pub.pub)), sorted(big(fresh)));
  t.is(index.lookup({ tokens: P1 }).engines[0]!.hit_blocks, 2);
});

test('vllm-events integration - two publishers (DP ranks 0 and 1) through `kvstash serve` and `lookup --engines`', async (t) => {
  const [a, b] = await Promise.all([Publisher.start(['--dp-rank', '0', '--topic', 't'], t), Publisher.start(['--dp-rank', '1', '--topic', 't'], t)]);
  const dir = tempDir();
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const endpoint = uniqueIpc(dir);
  const { proc, output } = await spawnSidecar(['--endpoints', endpoint, '--file-root', '', '--dram-bytes', '16MiB',
    '--vllm-events', a.pub, '--vllm-events', b.pub, '--vllm-events-replay', a.replay, '--vllm-events-replay', b.replay, '--vllm-events-topic', 't']);
  t.teardown(() => killAndWait(proc));
  await Promise.all([a.cmd({ cmd: 'wait_subscribers' }), b.cmd({ cmd: 'wait_subscribers' })]);
  await a.cmd({ cmd: 'store', tokens: P1 });
  await b.cmd({ cmd: 'store', tokens: P1, last_block: 2, encoding: 'array-events' });
  await b.cmd({ cmd: 'store', tokens: P2, first_block: 2, skip_live: true });
  await b.cmd({ cmd: 'store', tokens: P3, lora: 'alpaca', encoding: 'map-envelope' });
  const client = new KvstashClient(endpoint, { timeoutMs: 5000 });
  t.teardown(() => client.close());
  const deadline = Date.now() + 8000;
  for (;;) {
    const streams = (await client.request({ op: 'ENGINES', tokens: [] })).header.streams as StreamStats[];
    if (streams.map((s) => s.last_seq).join() === '0,2') break;
    if (Date.now() > deadline) t.fail(`streams did not sync: ${JSON.stringify(streams)}\n${output()}`);
    await new Promise((r) => setTimeout(r, 30));
  }
  const run = (args: string[]) => new Promise<string>((resolve, reject) => {
    execFile(process.execPath, ['--import=tsx', path.join(repoRoot, 'cli', 'kvstash.ts'), 'lookup', '--engines', '--endpoint', endpoint, ...args],
      { cwd: repoRoot, timeout: 20_000 }, (err, out, errOut) => (err ? reject(new Error(`${err.message}\n${errOut}`)) : resolve(out)));
  });
  const [json, table] = await Promise.all([run(['--json', '--tokens', P2.join(',')]), run(['--tokens', P1.join(' ')])]);
  const r = JSON.parse(json) as { blocks: number; engines: { engine: string; dp_rank: number; hit_blocks: number; blocks: number }[] };
  t.is(r.blocks, 4);
  t.deepEqual(r.engines.map((e) => [e.engine, e.dp_rank, e.hit_blocks, e.blocks]), [[b.pub, 1, 4, 6], [a.pub, 0, 2, 4]]);
  const rows = table.split('\n').filter((l) => l.startsWith('tcp://'));
  t.deepEqual(rows.map((l) => l.split(/\s+/)), [[a.pub, '0', '4', '64', '4'], [b.pub, '1', '2', '32', '6']]);
});
