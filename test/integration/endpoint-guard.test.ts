/**
 * A second `kvstash serve` on the endpoints of a running one refuses to start and leaves its ipc socket alone
 * (issue 9 item 6): two real processes, a real ipc socket file.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { KvstashClient } from '../../connector/client.js';
import { probeEndpoint } from '../../connector/server/endpoint-probe.js';
import { killAndWait, NS, repoRoot, spawnSidecar, tempDir } from '../helpers/sidecar.js';

/** Run `kvstash serve` to its exit (deadline 30 s); resolves with its exit code and output. */
function serveToExit(args: string[]): Promise<{ code: number | null; out: string }> {
  const proc = spawn(process.execPath, ['--import=tsx', path.join(repoRoot, 'cli', 'kvstash.ts'), 'serve', '--grpc', '', '--metrics', '', ...args], {
    cwd: repoRoot, env: { ...process.env, KVSTASH_LOG_LEVEL: 'warn' }, stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  proc.stdout.on('data', (d) => { out += d; });
  proc.stderr.on('data', (d) => { out += d; });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { proc.kill('SIGKILL'); reject(new Error(`second serve still running after 30 s:\n${out}`)); }, 30_000);
    proc.on('close', (code) => { clearTimeout(timer); resolve({ code, out }); });
  });
}

test('endpoint guard - a second serve on a live ipc endpoint exits with KVS_CONFIG; the first stays reachable over ipc', async (t) => {
  const dir = tempDir('kvstash-guard-');
  const ep = `ipc://${path.join(dir, 'kvstash.sock')}`;
  const first = await spawnSidecar(['--endpoints', ep, '--file-root', path.join(dir, 'a')]);
  t.teardown(() => killAndWait(first.proc));
  const c1 = new KvstashClient(ep, { timeoutMs: 10_000 });
  t.teardown(() => c1.close());
  const ns = await c1.hello(NS);

  const second = await serveToExit(['--endpoints', ep, '--file-root', path.join(dir, 'b')]);
  t.is(second.code, 2, second.out);
  t.regex(second.out, /KVS_CONFIG: endpoint ipc:\/\/.* is in use by a live process/);
  t.false(existsSync(path.join(dir, 'b')), 'the refused sidecar opened no tier folder');

  // The first sidecar is still reachable over ipc by a NEW connection (its socket file was not replaced).
  const c2 = new KvstashClient(ep, { timeoutMs: 10_000 });
  t.teardown(() => c2.close());
  t.is(await c2.hello(NS), ns);
  t.is((await c2.lookup(ns, [Buffer.alloc(32, 1)])).hit, 0);
});

test('endpoint guard - a stale ipc socket file left by a killed process does not block a start', async (t) => {
  const dir = tempDir('kvstash-guard-');
  const sockPath = path.join(dir, 'stale.sock');
  // A real process binds the path and is SIGKILLed: the socket file stays, nobody listens.
  const holder = spawn(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(sockPath)}, () => console.log('up'))`], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => { holder.stdout.once('data', () => resolve()); holder.once('exit', reject); });
  t.is(await probeEndpoint(`ipc://${sockPath}`), 'live');
  await killAndWait(holder);
  t.true(existsSync(sockPath));
  t.is(await probeEndpoint(`ipc://${sockPath}`), 'free');
  const s = await spawnSidecar(['--endpoints', `ipc://${sockPath}`, '--file-root', path.join(dir, 'tier')]);
  t.teardown(() => killAndWait(s.proc));
  const c = new KvstashClient(`ipc://${sockPath}`, { timeoutMs: 10_000 });
  t.teardown(() => c.close());
  t.truthy(await c.hello(NS));
});

test('endpoint guard - a fixed tcp port held by a live listener is refused before the tiers open', async (t) => {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  const port = (server.address() as net.AddressInfo).port;
  const dir = tempDir('kvstash-guard-');
  const r = await serveToExit(['--endpoints', `tcp://127.0.0.1:${port}`, '--file-root', path.join(dir, 'tier')]);
  t.is(r.code, 2, r.out);
  t.regex(r.out, /KVS_CONFIG: endpoint tcp:\/\/127\.0\.0\.1:\d+ is in use/);
  t.false(existsSync(path.join(dir, 'tier')));
});
