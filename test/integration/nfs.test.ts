/**
 * NFS driver against a REAL NFS-served folder.
 *
 * By default the test serves one itself: scripts/nfs-server.sh starts nfs-ganesha (VFS backend) in a private
 * network namespace and mounts it through gvfs's NFS client (FUSE) — the machine's kernel has no NFS client. It
 * needs root and the Debian packages in scripts/test-prereqs.mjs. If that server cannot come up, every test here
 * FAILS (it does not skip): a storage layer nobody ran against NFS is not tested.
 *
 * On a host with a kernel NFS mount, point the suite at it instead:
 *   KVSTASH_NFS_DIR=/mnt/nfs npx ava test/integration/nfs.test.ts
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { checksum } from '../../connector/checksum.js';
import { driverConformance } from '../../connector/storage/conformance.js';
import { NfsDriver, parseNfsConfig } from '../../connector/storage/nfs.js';
import { repoRoot, tempDir } from '../helpers/sidecar.js';

const script = path.join(repoRoot, 'scripts', 'nfs-server.sh');
const nfsModule = fileURLToPath(new URL('../../connector/storage/nfs.ts', import.meta.url));
let serverDir: string | undefined;
let base = '';

test.before(() => {
  const given = process.env.KVSTASH_NFS_DIR;
  if (given) {
    base = path.join(given, `kvstash-test-${process.pid}-${Date.now()}`);
    mkdirSync(base, { recursive: true });
    return;
  }
  serverDir = tempDir('kvstash-nfs-');
  const r = spawnSync(script, ['start', serverDir], { encoding: 'utf8', timeout: 90_000 });
  if (r.status !== 0) {
    const why = r.error ? r.error.message : r.stderr;
    throw new Error(`the NFS server did not come up (scripts/nfs-server.sh start exited ${r.status}):\n${why}\nThis suite needs root and: node scripts/test-prereqs.mjs`);
  }
  const mount = r.stdout.trim().split('\n').pop()!;
  base = path.join(mount, `run-${process.pid}`);
  mkdirSync(base, { recursive: true });
});

test.after.always(() => {
  if (base) rmSync(base, { recursive: true, force: true });
  if (serverDir) {
    spawnSync(script, ['stop', serverDir], { encoding: 'utf8', timeout: 60_000 });
    rmSync(serverDir, { recursive: true, force: true });
  }
});

let n = 0;
driverConformance(test, () => {
  const config = { root: path.join(base, `case-${n++}`), maxValueBytes: 72 * 2 ** 20 };
  const make = () => new NfsDriver(parseNfsConfig(config));
  return { driver: make(), reopen: make, subprocess: { module: nfsModule, export: 'nfsDriverFactory', config } };
}, { prefix: 'nfs', caseTimeoutMs: 100_000 });

test('nfs - the folder really is served over NFS: a value written through the mount lands in the exported folder', (t) => {
  if (!serverDir) {
    t.pass('KVSTASH_NFS_DIR given: the mount is the operator\'s');
    return;
  }
  const mounts = readFileSync('/proc/mounts', 'utf8');
  t.regex(mounts, new RegExp(`${serverDir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}/mnt fuse`), 'gvfsd-fuse mount');
  const exported = path.join(serverDir, 'export', `run-${process.pid}`);
  const name = `probe-${Date.now()}`;
  writeFileSync(path.join(base, name), 'through NFS');
  t.is(readFileSync(path.join(exported, name), 'utf8'), 'through NFS', 'the server stored it');
  rmSync(path.join(base, name));
});

test('nfs - temp files of dead writers are swept by age; fresh ones (another host writing now) stay', async (t) => {
  const root = path.join(base, 'sweep');
  const d = new NfsDriver(parseNfsConfig({ root, tmpMaxAgeMs: 60_000, sweepIntervalMs: 0 }));
  await d.open();
  t.teardown(() => d.close());
  const tmp = path.join(root, 'tmp');
  writeFileSync(path.join(tmp, 'deadhost-1-x-0.tmp'), 'left by a writer that died');
  utimesSync(path.join(tmp, 'deadhost-1-x-0.tmp'), new Date(Date.now() - 3_600_000), new Date(Date.now() - 3_600_000));
  writeFileSync(path.join(tmp, 'otherhost-7-y-3.tmp'), 'being written right now');
  const d2 = new NfsDriver(parseNfsConfig({ root, tmpMaxAgeMs: 60_000, sweepIntervalMs: 0 }));
  await d2.open(); // a second sidecar starting up
  t.deepEqual(readdirSync(tmp), ['otherhost-7-y-3.tmp']);
  t.is(d2.stats().tmpSwept, 1);
  await d2.close();
});

test('nfs - two-level fan-out layout, fsync before publish, and a racing deleter is a miss, not an error', async (t) => {
  const root = path.join(base, 'layout');
  const a = new NfsDriver(parseNfsConfig({ root }));
  const b = new NfsDriver(parseNfsConfig({ root }));
  await a.open();
  await b.open();
  t.teardown(async () => { await a.close(); await b.close(); });
  t.true(a.durable, 'fsync is on by default on NFS');
  const k = `${'1'.repeat(32)}/abcd${'0'.repeat(60)}`;
  const v = Buffer.from('shared value');
  await a.put(k, v, { checksum: checksum(v) });
  t.true(existsSync(path.join(root, 'nfs-v1', '1'.repeat(32), 'ab', 'cd', `abcd${'0'.repeat(60)}.kvb`)));
  t.true((await b.get(k))!.value.equals(v), 'another instance (host) reads it at its next open');
  t.true(await b.delete(k));
  t.is(await a.get(k), undefined);
  t.false(await a.delete(k), 'already deleted by the other host');
  t.is(await a.stat(k), undefined);
});
