/**
 * Damage on disk, then a restart: bit flips in block files, block files copied over (or next to) other keys'
 * files, and a full disk (a 64 MiB tmpfs, root only). Every block is read back after the restart and compared
 * with its deterministic content: a damaged block may be a miss, never wrong bytes; undamaged blocks must be
 * there (acknowledged data lost otherwise).
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, openSync, readdirSync, readSync, rmSync, statSync, writeSync, closeSync } from 'node:fs';
import path from 'node:path';
import { KvstashClient } from '../../connector/client.js';
import { namespaceId } from '../../connector/keys.js';
import { HEADER_BYTES } from '../../connector/storage/file.js';
import { blockFor, keyOf, NS, rng, serve, tempDir, until, verdict, wrongBytes, type Row } from './common.js';

const SIZE = 64 * 1024;

async function writeAll(endpoint: string, keys: Buffer[], size: number): Promise<{ acked: Buffer[] }> {
  const c = new KvstashClient(endpoint, { timeoutMs: 60_000 });
  try {
    const ns = await c.hello(NS);
    const acked: Buffer[] = [];
    for (let i = 0; i < keys.length; i += 16) {
      const ks = keys.slice(i, i + 16);
      const res = await c.put(ns, ks, ks.map((k) => blockFor(k, size)));
      ks.forEach((k, j) => { if (res[j] === 0 || res[j] === 1) acked.push(k); });
    }
    await until(async () => ((await c.stats()) as { tiers: { queueDepth: number }[] }).tiers.every((t) => t.queueDepth === 0), 120_000, 'empty write-behind queue');
    return { acked };
  } finally {
    c.close();
  }
}

/** Read every key back: wrong bytes served, and which keys missed. */
async function readAll(endpoint: string, keys: Buffer[], size: number): Promise<{ wrong: number; missing: Set<string> }> {
  const c = new KvstashClient(endpoint, { timeoutMs: 60_000 });
  let wrong = 0;
  const missing = new Set<string>();
  try {
    const ns = await c.hello(NS);
    for (let i = 0; i < keys.length; i += 16) {
      const ks = keys.slice(i, i + 16);
      const got = await c.get(ns, ks);
      ks.forEach((k, j) => { if (!got[j]) missing.add(k.toString('hex')); else wrong += wrongBytes(got[j]!, blockFor(k, size)); });
    }
  } finally {
    c.close();
  }
  return { wrong, missing };
}

const fileOf = (root: string, k: Buffer) => {
  const h = k.toString('hex');
  return path.join(root, 'v1', namespaceId(NS), h.slice(0, 2), `${h}.kvb`);
};

export async function damage(seed: number): Promise<Row[]> {
  const dir = tempDir('damage');
  const root = path.join(dir, 'tier');
  const args = ['--file-root', root, '--dram-bytes', '16MiB', '--file-bytes', '1GiB'];
  const keys = Array.from({ length: 400 }, (_, i) => keyOf(`damage-${seed}`, i));
  const s1 = await serve(dir, args);
  const { acked } = await writeAll(s1.endpoint, keys, SIZE);
  await s1.stop();
  const r = rng(seed);
  // 62 files with one flipped byte (a few in the block file's header), 6 copied over other keys, 6 copied to keys never stored.
  const flipped = new Set<string>();
  for (let i = 0; i < 62; i++) {
    const k = acked[i * 5]!;
    const f = fileOf(root, k);
    const size = statSync(f).size;
    const at = i % 10 === 0 ? Math.floor(r() * HEADER_BYTES) : HEADER_BYTES + Math.floor(r() * (size - HEADER_BYTES));
    const fd = openSync(f, 'r+');
    const b = Buffer.alloc(1);
    readSync(fd, b, 0, 1, at);
    b[0] = b[0]! ^ (1 << Math.floor(r() * 8));
    writeSync(fd, b, 0, 1, at);
    closeSync(fd);
    flipped.add(k.toString('hex'));
  }
  const misplacedOver: Buffer[] = [];
  const phantom: Buffer[] = [];
  for (let i = 0; i < 6; i++) {
    const src = acked[i * 5 + 1]!;
    const dst = acked[i * 5 + 2]!;
    copyFileSync(fileOf(root, src), fileOf(root, dst));
    misplacedOver.push(dst);
    const ghost = keyOf(`damage-${seed}-ghost`, i);
    mkdirSync(path.dirname(fileOf(root, ghost)), { recursive: true });
    copyFileSync(fileOf(root, src), fileOf(root, ghost));
    phantom.push(ghost);
  }
  const s2 = await serve(dir, args);
  const flips = await readAll(s2.endpoint, acked.filter((k) => flipped.has(k.toString('hex'))), SIZE);
  const moved = await readAll(s2.endpoint, [...misplacedOver, ...phantom], SIZE);
  const damagedSet = new Set([...flipped, ...misplacedOver.map((k) => k.toString('hex'))]);
  const rest = await readAll(s2.endpoint, acked.filter((k) => !damagedSet.has(k.toString('hex'))), SIZE);
  const peak = s2.peakMiB();
  await s2.stop();
  rmSync(dir, { recursive: true, force: true });
  return [
    { attack: 'bit flips in block files, restart', count: flipped.size, wrongBytes: flips.wrong, lost: rest.missing.size, peakRssMiB: peak,
      verdict: verdict(flips.wrong === 0 && rest.missing.size === 0), note: `${flips.missing.size} of ${flipped.size} flipped blocks missed (quarantined)` },
    { attack: 'misplaced block files, restart', count: misplacedOver.length + phantom.length, wrongBytes: moved.wrong, lost: '-', peakRssMiB: peak,
      verdict: verdict(moved.wrong === 0), note: `${12 - moved.missing.size} of 12 misplaced files served as another key's block` },
  ];
}

export async function diskFull(seed: number): Promise<Row> {
  const name = 'disk full (64 MiB tmpfs, 160 MiB written)';
  if (process.getuid?.() !== 0) return { attack: name, count: 0, wrongBytes: 0, lost: '-', peakRssMiB: 0, verdict: 'SKIP', note: 'needs root to mount a tmpfs' };
  const dir = tempDir('full');
  const root = path.join(dir, 'tier');
  mkdirSync(root);
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64m', 'tmpfs', root]);
  try {
    const args = ['--file-root', root, '--dram-bytes', '16MiB', '--file-bytes', '512MiB'];
    const size = 256 * 1024;
    const keys = Array.from({ length: 640 }, (_, i) => keyOf(`full-${seed}`, i));
    const s1 = await serve(dir, args);
    await writeAll(s1.endpoint, keys, size);
    const health = s1.out();
    await s1.stop();
    // Torn files: a published block file whose length is not its header plus its value (file.ts's format).
    let torn = 0;
    let files = 0;
    const walk = (d: string) => {
      for (const e of readdirSync(d, { withFileTypes: true })) {
        const p = path.join(d, e.name);
        if (e.isDirectory()) walk(p);
        else if (e.name.endsWith('.kvb')) {
          files++;
          const buf = Buffer.alloc(HEADER_BYTES);
          const fd = openSync(p, 'r');
          const n = readSync(fd, buf, 0, HEADER_BYTES, 0);
          closeSync(fd);
          if (n < HEADER_BYTES || Number(buf.readBigUInt64LE(8)) + HEADER_BYTES !== statSync(p).size) torn++;
        }
      }
    };
    walk(path.join(root, 'v1'));
    const s2 = await serve(dir, args);
    const back = await readAll(s2.endpoint, keys, size);
    const peak = Math.max(s1.peakMiB(), s2.peakMiB());
    await s2.stop();
    return {
      attack: name, count: keys.length, wrongBytes: back.wrong, lost: '-', peakRssMiB: peak, verdict: verdict(back.wrong === 0 && torn === 0),
      note: `${files} files published, ${torn} torn; ${keys.length - back.missing.size} blocks readable after restart; write errors logged: ${/ENOSPC|no space/i.test(health) ? 'yes' : 'no'}`,
    };
  } finally {
    execFileSync('umount', ['-l', root]);
    rmSync(dir, { recursive: true, force: true });
  }
}
