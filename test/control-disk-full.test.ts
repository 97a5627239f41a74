/**
 * Issue 9 item 3, end to end: the sidecar's file tier on a full 64 MiB tmpfs. Health says DEGRADED with the
 * reason, /metrics shows the tier degraded and its write errors, start-up sweeps orphans and counts them.
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import path from 'node:path';
import { blockHashes } from '../connector/keys.js';
import { nsOf, startControl } from './helpers/control.js';
import { blockFor, tempDir } from './helpers/sidecar.js';

function scrape(address: string): Promise<string> {
  const i = address.lastIndexOf(':');
  return new Promise((resolve, reject) => {
    const req = request({ host: address.slice(0, i), port: Number(address.slice(i + 1)), path: '/metrics', timeout: 5000 }, (res) => {
      let body = '';
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve(body));
    });
    req.on('error', reject);
    req.end();
  });
}

const sample = (body: string, re: RegExp) => Number(re.exec(body)?.[1] ?? NaN);

test('control disk-full - health DEGRADED and metrics while the file tier cannot write; orphans swept at start-up', async (t) => {
  const mnt = tempDir('kvstash-ctlfull-');
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64m', 'tmpfs', mnt]);
  t.teardown(() => { execFileSync('umount', ['-l', mnt]); rmSync(mnt, { recursive: true, force: true }); });
  const root = path.join(mnt, 'tier');
  // Orphans from an earlier life: a stale temp file and a block file with a damaged header.
  mkdirSync(path.join(root, 'tmp'), { recursive: true });
  writeFileSync(path.join(root, 'tmp', '1234-old-0.tmp'), 'half a block');
  const junkDir = path.join(root, 'v1', 'a'.repeat(32), 'ab');
  mkdirSync(junkDir, { recursive: true });
  writeFileSync(path.join(junkDir, `ab${'0'.repeat(62)}.kvb`), Buffer.alloc(200, 7));

  const r = await startControl({ fileRoot: root, dramBytes: '256MiB', fileBytes: '1GiB', metrics: '127.0.0.1:0' });
  t.teardown(r.stop);
  let body = await scrape(r.metrics!.address);
  t.is(sample(body, /kvstash_tier_driver_stat\{tier="file",stat="orphansSwept"\} (\S+)/), 2);
  const g = r.control();
  t.is((await g.health()).status, 'SERVING');

  const c = r.client();
  const ns = await c.hello(nsOf('default'));
  const keys = blockHashes(Array.from({ length: 40 * 16 }, (_, i) => i), 16);
  await c.put(ns, keys, keys.map((k) => blockFor(k, 2 * 2 ** 20)));
  await r.sidecar.tiers.drain();
  t.deepEqual(readdirSync(path.join(root, 'tmp')), [], 'no temp file left behind');
  const h = await g.health();
  t.is(h.status, 'DEGRADED');
  t.regex(String((h.tiers as { error: string }[])[1]!.error), /last write failed: .*(ENOSPC|no space|short write)/i);
  body = await scrape(r.metrics!.address);
  t.is(sample(body, /kvstash_tier_degraded\{tier="file",medium="DISK"\} (\S+)/), 1);
  t.true(sample(body, /kvstash_tier_write_errors_total\{tier="file",medium="DISK"\} (\S+)/) > 0);
  // Every PUT the sidecar acknowledged is still served (from DRAM), whole.
  const got = await c.get(ns, keys);
  t.is(got.filter((b, i) => b?.equals(blockFor(keys[i]!, 2 * 2 ** 20))).length, 40);
});
