/**
 * Crash safety: kill -9 the sidecar process during a write storm, restart it on the same folder, and check
 * that every block it serves is exactly what was written (content is derived from the key), that the index
 * was rebuilt from disk, and that no temp file is ever taken for a block.
 */
import test from 'ava';
import { readdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { KvstashClient } from '../../connector/client.js';
import { blockHashes } from '../../connector/keys.js';
import { NS, blockFor, killAndWait, spawnSidecar, tempDir } from '../helpers/sidecar.js';

const sizeFor = (k: Buffer) => 4096 * (1 + (k[0]! % 64));

test('crash - kill -9 during a write storm never leaves a torn or wrong block, and the index is rebuilt', async (t) => {
  t.timeout(90_000);
  const dir = tempDir('kvstash-crash-');
  const sock = `ipc://${path.join(dir, 'kvs.sock')}`;
  const root = path.join(dir, 'tier');
  const args = ['--endpoints', sock, '--file-root', root, '--dram-bytes', '8MiB', '--file-bytes', '1GiB', '--write-concurrency', '8'];
  const first = await spawnSidecar(args);
  let second: Awaited<ReturnType<typeof spawnSidecar>> | undefined;
  t.teardown(async () => {
    await killAndWait(first.proc);
    if (second) await killAndWait(second.proc);
    rmSync(dir, { recursive: true, force: true });
  });

  const writers = Array.from({ length: 4 }, () => new KvstashClient(sock, { timeoutMs: 2000 }));
  const written: Buffer[] = [];
  let stop = false;
  const storms = writers.map(async (c, w) => {
    const ns = await c.hello(NS);
    for (let round = 0; !stop && round < 100_000; round++) {
      const keys = blockHashes(Array.from({ length: 8 * 16 }, (_, i) => w * 1e8 + round * 1000 + i), 16);
      written.push(...keys);
      await c.put(ns, keys, keys.map((k) => blockFor(k, sizeFor(k)))).catch(() => undefined);
    }
  });
  await new Promise((r) => setTimeout(r, 2500));
  await killAndWait(first.proc, 'SIGKILL');
  stop = true;
  await Promise.race([Promise.all(storms), new Promise((r) => setTimeout(r, 5000))]);
  for (const c of writers) c.close();
  t.true(written.length > 100, `storm wrote ${written.length} keys before the kill`);

  second = await spawnSidecar(args);
  const m = /index rebuilt from disk: (\d+) blocks/.exec(second.output());
  const rebuilt = Number(m?.[1]);
  t.true(rebuilt > 0, `index rebuilt with ${rebuilt} blocks`);

  const c = new KvstashClient(sock, { timeoutMs: 10_000 });
  t.teardown(() => c.close());
  const ns = await c.hello(NS);
  let served = 0;
  for (let i = 0; i < written.length; i += 64) {
    const keys = written.slice(i, i + 64);
    const got = await c.get(ns, keys);
    got.forEach((g, j) => {
      if (!g) return;
      served++;
      if (!g.equals(blockFor(keys[j]!, sizeFor(keys[j]!)))) t.fail(`block ${keys[j]!.toString('hex')} served with wrong bytes`);
    });
  }
  t.is(served, rebuilt, 'every rebuilt block is served, and only those');
  const stats = await c.stats();
  const file = (stats.tiers as { name: string; checksumFailures: number }[]).find((x) => x.name === 'file')!;
  t.is(file.checksumFailures, 0);
  t.deepEqual(readdirSync(path.join(root, 'tmp')).filter((f) => f.startsWith(`${first.proc.pid}-`)), [], 'temp files of the killed process were cleaned up');
});
