/**
 * The same-host arena from Python (adapters/python/tests/test_arena.py) against real sidecars: attach, in-place
 * loads and saves, a reused slot never served, another user kept on inline frames by the file's mode, an engine
 * killed with -9 between ALLOC and COMMIT, and a sidecar restarted under a connected client.
 */
import test from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { KvstashClient } from '../../connector/client.js';
import { killAndWait, repoRoot, spawnSidecar, startSidecar, tempDir, uniqueIpc } from '../helpers/sidecar.js';

const py = process.env.KVSTASH_PYTHON || '/usr/bin/python3';
const script = path.join(repoRoot, 'adapters', 'python', 'tests', 'test_arena.py');

function runPy(args: string[], opts: { prefix?: string[]; onLine?: (line: string, p: ChildProcess) => void; deadlineMs?: number } = {}): Promise<{ code: number | null; signal: NodeJS.Signals | null; out: string }> {
  const argv = [...(opts.prefix ?? []), py, script, ...args];
  const p = spawn(argv[0]!, argv.slice(1), {
    cwd: repoRoot, env: { ...process.env, PYTHONPATH: path.join(repoRoot, 'adapters', 'python') }, stdio: ['pipe', 'pipe', 'pipe'],
  });
  let out = '';
  const seen = new Set<string>();
  const onData = (d: Buffer) => {
    out += d;
    for (const line of out.split('\n').slice(0, -1)) if (!seen.has(line)) { seen.add(line); opts.onLine?.(line, p); }
  };
  p.stdout.on('data', onData);
  p.stderr.on('data', (d) => { out += d; });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { p.kill('SIGKILL'); reject(new Error(`python past its deadline:\n${out}`)); }, opts.deadlineMs ?? 120_000);
    p.on('close', (code, signal) => { clearTimeout(timer); resolve({ code, signal, out }); }); // close: after stdout and stderr are drained (exit may come first)
  });
}

test('arena-python - in-place round trips, ALLOC/COMMIT, inline when off, reused slots never served, load policy', async (t) => {
  const a = await startSidecar({ fileRoot: '' });
  const b = await startSidecar({ fileRoot: '', arenaLeaseMs: 150 });
  t.teardown(async () => { await a.stop(); await b.stop(); });
  const r = await runPy(['client', a.endpoint, b.endpoint]);
  t.is(r.code, 0, r.out);
  t.regex(r.out, /Ran 5 tests/);
  t.regex(r.out, /^OK$/m);
});

test('arena-python - a client of another user cannot map the arena (mode 0600) and stays on inline frames', async (t) => {
  const s = await startSidecar({ fileRoot: '', endpoints: ['tcp://127.0.0.1:0'] });
  t.teardown(() => s.stop());
  const ep = s.sidecar.endpoints.find((e) => e.startsWith('tcp://'))!;
  const r = await runPy(['inline', ep], { prefix: ['setpriv', '--reuid=nobody', '--regid=nogroup', '--clear-groups'] });
  t.is(r.code, 0, r.out);
  t.regex(r.out, /^OK$/m);
  const c = new KvstashClient(ep);
  t.teardown(() => c.close());
  const st = (await c.stats()) as { arena: { attached_clients: number } };
  t.is(st.arena.attached_clients, 0, 'nobody attached');
});

test('arena-python - an engine killed between ALLOC and COMMIT: its slots come back after twice commit_ms', async (t) => {
  const s = await startSidecar({ fileRoot: '', arenaCommitMs: 200 });
  t.teardown(() => s.stop());
  const r = await runPy(['die', s.endpoint]);
  t.is(r.signal, 'SIGKILL', r.out);
  t.regex(r.out, /ALLOCATED/);
  const c = s.client();
  const arena = async () => ((await c.stats()) as { arena: Record<string, number> }).arena;
  const until = Date.now() + 20_000;
  while ((await arena()).allocs_pending > 0 && Date.now() < until) await new Promise((res) => setTimeout(res, 50));
  const st = await arena();
  t.is(st.allocs_pending, 0);
  t.is(st.alloc_expired, 1);
  t.is(st.arena_allocated_bytes, 0, 'every slot is free again');
});

test('arena-python - sidecar killed with -9 and restarted: the client re-attaches to the new arena', async (t) => {
  const dir = tempDir();
  const ep = uniqueIpc(dir);
  // An arena folder of its own: every sidecar sweeps the stale arenas of its folder at start, and one started by
  // another test meanwhile could reclaim the killed sidecar's arena before the restarted one looks.
  const shm = mkdtempSync(path.join(existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir(), 'kvstash-test-arena-'));
  t.teardown(() => rmSync(shm, { recursive: true, force: true }));
  const args = ['--endpoints', ep, '--file-root', '', '--dram-bytes', '64MiB', '--arena-dir', shm];
  let sc = await spawnSidecar(args);
  t.teardown(() => killAndWait(sc.proc));
  const r = await runPy(['restart', ep], {
    onLine: (line, p) => {
      if (line !== 'READY') return;
      void (async () => {
        await killAndWait(sc.proc, 'SIGKILL');
        sc = await spawnSidecar(args);
        p.stdin!.write('go\n');
      })();
    },
  });
  t.is(r.code, 0, r.out);
  t.regex(r.out, /^OK$/m);
  const c = new KvstashClient(ep);
  t.teardown(() => c.close());
  const st = (await c.stats()) as { arena: Record<string, number> };
  t.true(st.arena.stale_arenas_swept >= 1, 'the killed sidecar\'s arena was reclaimed');
});
