/**
 * S3 driver against a REAL s3rver process on a loopback port.
 *
 * Where s3rver is laxer than AWS S3, these tests do not rely on it: s3rver checks no signatures (only an unknown
 * access key is refused — so that is what the credentials test uses, and it would pass against S3 too), and it
 * ignores `If-None-Match: *` (conditionalPut is off against it; its 412 handling is tested through a proxy that
 * answers the way S3 does). s3rver also assembles multipart objects in place, visible while being written — the
 * driver's size metadata turns that into a miss, which the conformance kit's read-while-write case checks.
 */
import test from 'ava';
import { randomBytes, createHash } from 'node:crypto';
import { execFile } from 'node:child_process';
import { rmSync } from 'node:fs';
import path from 'node:path';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { GetObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { checksum } from '../../connector/checksum.js';
import { driverConformance } from '../../connector/storage/conformance.js';
import { S3Driver } from '../../connector/storage/s3.js';
import { parseS3Config } from '../../connector/storage/s3-config.js';
import { startS3rver, type S3rverProcess } from '../helpers/s3rver.js';
import { NS, repoRoot, startSidecar } from '../helpers/sidecar.js';

const MiB = 2 ** 20;
const s3module = fileURLToPath(new URL('../../connector/storage/s3.ts', import.meta.url));
const key = () => `${randomBytes(16).toString('hex')}/${randomBytes(32).toString('hex')}`;
const SMALL_PARTS = { multipartThresholdBytes: 8 * MiB, partBytes: 5 * MiB, rangedReadThresholdBytes: 8 * MiB, maxValueBytes: 72 * MiB };

let s3: S3rverProcess;
/** A second, quiet server behind the fault-injecting proxy: its timing must not depend on the conformance load. */
let quiet: S3rverProcess;
test.before(async () => { [s3, quiet] = await Promise.all([startS3rver(), startS3rver()]); });
test.after.always(async () => { await s3?.stop(); await quiet?.stop(); });

let n = 0;
const cfg = (over: Record<string, unknown> = {}) => ({ ...s3.config, ...SMALL_PARTS, prefix: `t${n++}/`, ...over });

// The kit's cases share one s3rver and each has its own 60 s hang guard: run them one at a time, so a loaded
// machine slows each case down instead of making 20 of them (64 MiB values included) compete at once.
driverConformance(test.serial, () => {
  const config = cfg();
  const make = () => new S3Driver(parseS3Config(config));
  return { driver: make(), reopen: make, subprocess: { module: s3module, export: 's3DriverFactory', config } };
}, { prefix: 's3' });

function rawClient(): S3Client {
  return new S3Client({ region: 'us-east-1', endpoint: s3.endpoint, forcePathStyle: true, credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } });
}

test('s3 - the bytes on the server are exactly the value (no aws-chunked framing), single and multipart, with checksum metadata', async (t) => {
  const config = cfg();
  const d = new S3Driver(parseS3Config(config));
  await d.open();
  t.teardown(() => d.close());
  const raw = rawClient();
  t.teardown(() => raw.destroy());
  for (const size of [1, 300_000, 20 * MiB + 17]) {
    const k = key();
    const v = randomBytes(size);
    await d.put(k, v, { checksum: checksum(v) });
    const r = await raw.send(new GetObjectCommand({ Bucket: s3.bucket, Key: `${config.prefix}v1/${k}` }));
    const stored = Buffer.from(await r.Body!.transformToByteArray());
    t.is(createHash('sha256').update(stored).digest('hex'), createHash('sha256').update(v).digest('hex'), `${size} bytes stored verbatim`);
    t.is(r.Metadata?.['kvs-checksum'], checksum(v));
    t.is(r.Metadata?.['kvs-size'], String(size));
  }
  t.true(d.stats().multipart_ok >= 3, 'the 20 MiB value went up in parts');
});

test('s3 - an unknown access key is refused with KVS_UNAUTHENTICATED and a clear message', async (t) => {
  // Through the counting proxy: a refusal must reach the server exactly once (never retried). The driver's own
  // retry counter is not the measure here: on a loaded machine a kept-alive socket may be reset and retried,
  // which is a retry, but not of the refusal.
  const p = await faultyProxy(quiet.port);
  t.teardown(() => p.close());
  const d = new S3Driver(parseS3Config(cfg({ endpoint: p.endpoint, accessKeyId: 'NOT-A-KEY', secretAccessKey: 'whatever', requestTimeoutMs: 60_000, connectTimeoutMs: 60_000 })));
  const err = await t.throwsAsync(d.open()) as { code?: string; message: string };
  t.is(err.code, 'KVS_UNAUTHENTICATED');
  t.regex(err.message, /InvalidAccessKeyId.*credentials refused/);
  const before = p.state.requests;
  const e2 = await t.throwsAsync(d.get(key())) as { code?: string };
  t.is(e2.code, 'KVS_UNAUTHENTICATED', 'refusals are answers: not retried, not a miss');
  t.is(p.state.requests - before, 1, 'the refused GET reached the server once');
  t.is(d.breaker.state, 'closed', 'a refusal does not open the circuit');
  await d.close();
});

/** `kvstash <args>` through tsx; the deadline is a hang guard for a loaded machine, not a timing. */
const kvstash = (args: string[], env: NodeJS.ProcessEnv) =>
  new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'cli', 'kvstash.ts'), ...args], { cwd: repoRoot, encoding: 'utf8', timeout: 240_000, env: { ...process.env, ...env } },
      (err, stdout, stderr) => resolve({ status: err ? (typeof err.code === 'number' ? err.code : null) : 0, stdout, stderr }));
  });

test('s3 - `kvstash driver-test s3` with credentials from the environment (AWS_ACCESS_KEY_ID/…) passes the kit', async (t) => {
  t.timeout(540_000);
  const noKeys: Record<string, unknown> = cfg({ maxValueBytes: 16 * MiB });
  delete noKeys.accessKeyId;
  delete noKeys.secretAccessKey;
  const r = await kvstash(['driver-test', 's3', '--config', JSON.stringify(noKeys), '--only', 'small,missing,batch,list,crash-mid-put'],
    { AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER' });
  t.is(r.status, 0, r.stdout + r.stderr);
  t.regex(r.stdout, /5 passed, 0 failed, 0 skipped/);
  const bad = await kvstash(['driver-test', 's3', '--config', JSON.stringify(noKeys), '--only', 'small'], { AWS_ACCESS_KEY_ID: 'NOBODY', AWS_SECRET_ACCESS_KEY: 'x' });
  t.is(bad.status, 1);
  t.regex(bad.stdout, /small\s+FAIL\s+\d+\s+KVS_UNAUTHENTICATED/);
});

test('s3 - virtual-hosted addressing (bucket in the host name) works against a server that routes by host', async (t) => {
  const vh = await startS3rver({ bucket: 'vhost-bucket', extraArgs: ['--service-endpoint', 'kvs.test'] });
  t.teardown(() => vh.stop());
  // No DNS here: resolve every name to loopback, as /etc/hosts would for bucket.s3.kvs.test.
  const httpAgent = new http.Agent({
    lookup: ((_host: string, opts: { all?: boolean }, cb: (e: null, a: unknown, f?: number) => void) =>
      (opts.all ? cb(null, [{ address: '127.0.0.1', family: 4 }]) : cb(null, '127.0.0.1', 4))) as never,
  });
  const d = new S3Driver(parseS3Config({ ...vh.config, endpoint: `http://s3.kvs.test:${vh.port}`, forcePathStyle: false }), { requestHandler: { httpAgent } });
  await d.open();
  const k = key();
  const v = randomBytes(1000);
  await d.put(k, v, { checksum: checksum(v) });
  t.true((await d.get(k))!.value.equals(v));
  await d.close();
});

/** A loopback HTTP proxy in front of s3rver that can answer like a failing or conditional S3. */
async function faultyProxy(target: number) {
  const state = { fail503: 0, served503: 0, hangNext: 0, conditional412: false, requests: 0, conditionalSeen: 0 };
  const server = http.createServer((req, res) => {
    state.requests++;
    if (req.headers['if-none-match'] === '*') state.conditionalSeen++;
    if (state.hangNext > 0) {
      state.hangNext--;
      req.resume();
      return; // never answers: the client's deadline must fire
    }
    if (state.fail503 > 0) {
      state.fail503--;
      state.served503++;
      req.resume();
      res.writeHead(503, { 'content-type': 'application/xml' }).end('<Error><Code>SlowDown</Code><Message>reduce your rate</Message></Error>');
      return;
    }
    if (state.conditional412 && req.method === 'PUT' && req.headers['if-none-match'] === '*') {
      req.resume();
      res.writeHead(412, { 'content-type': 'application/xml' }).end('<Error><Code>PreconditionFailed</Code><Message>At least one of the pre-conditions you specified did not hold</Message></Error>');
      return;
    }
    const up = http.request({ host: '127.0.0.1', port: target, method: req.method, path: req.url, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode!, r.headers);
      r.pipe(res);
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return { state, endpoint: `http://127.0.0.1:${port}`, close: () => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }) };
}

test('s3 - 5xx/throttling and hung requests are retried with backoff under per-request deadlines', async (t) => {
  const p = await faultyProxy(quiet.port);
  t.teardown(() => p.close());
  const d = new S3Driver(parseS3Config(cfg({ endpoint: p.endpoint, retries: 3, retryBaseMs: 20, retryMaxMs: 100, requestTimeoutMs: 3000 })));
  await d.open();
  t.teardown(() => d.close());
  const k = key();
  const v = randomBytes(5000);
  p.state.fail503 = 2;
  await d.put(k, v, { checksum: checksum(v) });
  t.is(p.state.served503, 2);
  t.true(d.stats().retries >= 2, 'both 503s were retried');
  p.state.hangNext = 1;
  const t0 = Date.now();
  t.true((await d.get(k))!.value.equals(v));
  t.true(Date.now() - t0 >= 3000, 'waited for the deadline of the hung request');
  t.true(d.stats().timeouts >= 1);
  p.state.fail503 = 10;
  const err = await t.throwsAsync(d.get(k)) as { code?: string; message: string };
  t.is(err.code, 'KVS_STORAGE');
  t.regex(err.message, /SlowDown|503/);
  t.is(p.state.served503, 2 + 4, 'first attempt + 3 retries, then it gave up');
});

test('s3 - the circuit opens after repeated failures, refuses at once, and a half-open probe closes it', async (t) => {
  const p = await faultyProxy(quiet.port);
  t.teardown(() => p.close());
  const d = new S3Driver(parseS3Config(cfg({ endpoint: p.endpoint, retries: 0, breakerFailures: 3, breakerCooldownMs: 300 })));
  await d.open();
  t.teardown(() => d.close());
  const k = key();
  p.state.fail503 = 1000;
  for (let i = 0; i < 3; i++) await t.throwsAsync(d.get(k));
  t.is(d.breaker.state, 'open');
  t.false(d.available());
  const before = p.state.requests;
  const err = await t.throwsAsync(d.get(k)) as { code?: string };
  t.is(err.code, 'KVS_UNAVAILABLE');
  t.is(p.state.requests, before, 'refused without a request');
  p.state.fail503 = 0;
  await new Promise((r) => setTimeout(r, 350));
  t.true(d.available(), 'half-open: a probe may go');
  t.is(await d.get(k), undefined, 'the probe (a miss) succeeds');
  t.is(d.breaker.state, 'closed');
  t.is(d.stats().breakerOpens, 1);
});

test('s3 - conditional create: a 412 to If-None-Match means someone stored it first, which is success', async (t) => {
  const p = await faultyProxy(quiet.port);
  t.teardown(() => p.close());
  const d = new S3Driver(parseS3Config(cfg({ endpoint: p.endpoint, conditionalPut: true })));
  await d.open();
  t.teardown(() => d.close());
  p.state.conditional412 = true;
  const v = randomBytes(100);
  await d.put(key(), v, { checksum: checksum(v) });
  t.is(p.state.conditionalSeen, 1, 'the PUT carried If-None-Match: *');
  t.is(d.stats().conditionalConflicts, 1);
  t.is(d.breaker.state, 'closed');
});

test('s3 - server killed mid-upload: the put fails, no partial object is visible after the server returns', async (t) => {
  const local = await startS3rver();
  t.teardown(() => local.stop());
  const config = { ...local.config, ...SMALL_PARTS, retries: 0, partConcurrency: 1, requestTimeoutMs: 5000 };
  const d = new S3Driver(parseS3Config(config));
  await d.open();
  const k = key();
  const v = randomBytes(64 * MiB);
  const put = d.put(k, v, { checksum: checksum(v) });
  while (d.stats().multipart_ok < 2) await new Promise((r) => setTimeout(r, 5)); // upload started, one part in
  await local.kill();
  const err = await t.throwsAsync(put) as { code?: string };
  t.true(['KVS_STORAGE', 'KVS_TIMEOUT'].includes(err.code!), err.code);
  await d.close();
  await local.restart();
  const d2 = new S3Driver(parseS3Config(config));
  await d2.open();
  t.teardown(() => d2.close());
  t.is(await d2.get(k), undefined);
  t.false(await d2.has(k));
  const listed: string[] = [];
  for await (const it of d2.list()) listed.push(it.key);
  t.false(listed.includes(k));
});

test('s3 - a sidecar keeps serving from DRAM and file while the S3 server is down (circuit open) and recovers when it is back', async (t) => {
  const local = await startS3rver();
  t.teardown(() => local.stop());
  const fileRoot = `${local.dir}-file`;
  t.teardown(() => rmSync(fileRoot, { recursive: true, force: true }));
  const tiers = [
    { name: 'file', driver: 'file', budget: '64MiB', root: fileRoot },
    // A dead server refuses connections at once, so deadlines can be generous: under load a slow (live) server
    // must not look dead and reopen the circuit.
    { name: 's3', driver: 's3', budget: '1GiB', ...local.config, retries: 0, breakerFailures: 2, breakerCooldownMs: 3000, requestTimeoutMs: 30_000, connectTimeoutMs: 30_000 },
  ];
  const sc = await startSidecar({ dramBytes: '1MiB', tiers: JSON.stringify(tiers), logLevel: 'silent' });
  t.teardown(() => sc.stop());
  const c = sc.client(10_000);
  const ns = await c.hello(NS);
  const keys = Array.from({ length: 8 }, () => randomBytes(32));
  const blocks = keys.map(() => randomBytes(256 * 1024));
  await c.put(ns, keys, blocks);
  await sc.sidecar.tiers.drain();
  const s3tier = () => sc.sidecar.tiers.stats().find((x) => x.name === 's3')!;
  t.is(s3tier().blocks, 8);
  await local.kill();
  const more = Array.from({ length: 4 }, () => randomBytes(32));
  await c.put(ns, more, more.map(() => randomBytes(256 * 1024)));
  await sc.sidecar.tiers.drain();
  t.false(s3tier().available, 'the circuit opened after the failed writes');
  t.true(s3tier().writeErrors >= 2);
  const got = await c.get(ns, keys);
  t.true(got.every((g, i) => g?.equals(blocks[i]!)), 'every block served from DRAM or file');
  t.is((await c.lookup(ns, keys)).hit, 8);
  await local.restart();
  // Wait for the condition, not for the cooldown's length: put a probe block until one of them (a half-open
  // probe, once the cooldown is over) reaches S3 and the circuit closes.
  const s3i = sc.sidecar.tiers.tiers.findIndex((x) => x.name === 's3');
  const onS3 = (k: Buffer) => ((sc.sidecar.tiers.entry(`${ns}/${k.toString('hex')}`)?.where ?? 0) & (1 << s3i)) !== 0;
  const probes: Buffer[] = [];
  const until = Date.now() + 90_000;
  while (!(s3tier().available && probes.some(onS3))) {
    if (Date.now() > until) t.fail(`the S3 circuit did not close within 90 s after the server came back: ${JSON.stringify(s3tier())}`);
    const probe = randomBytes(32);
    probes.push(probe);
    await c.put(ns, [probe], [randomBytes(128 * 1024)]); // its S3 write is the half-open probe once the cooldown is over
    await sc.sidecar.tiers.drain();
    if (!probes.some(onS3)) await new Promise((r) => setTimeout(r, 100));
  }
  t.true(s3tier().available, 'a probe succeeded: circuit closed');
  const later = Array.from({ length: 3 }, () => randomBytes(32));
  await c.put(ns, later, later.map(() => randomBytes(128 * 1024)));
  await sc.sidecar.tiers.drain();
  t.deepEqual(later.map(onS3), [true, true, true], 'new blocks reach S3 again');
  t.true(keys.every(onS3), 'the blocks written before the outage are still on S3');
  t.is(s3tier().blocks, 8 + probes.filter(onS3).length + 3);
});
