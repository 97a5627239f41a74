/**
 * Open doors closed by default when auth is on (issue 9 item 8): wrong gRPC tokens are throttled per peer host,
 * /metrics needs credentials and drops tenant/model labels, the lm:// server refuses to start (LMCache's client
 * cannot send credentials) unless explicitly allowed. Real gRPC and HTTP servers on loopback.
 */
import test from 'ava';
import { request } from 'node:http';
import { lmcacheExtension } from '../adapters/lmcache/cli-extension.js';
import { EXTENSIONS } from '../cli/extensions.js';
import { loadConfig } from '../connector/config.js';
import { AuthThrottle } from '../connector/control/auth-throttle.js';
import { blockHashes } from '../connector/keys.js';
import { ErrorCode, KvstashError } from '../protocol/errors.js';
import { nsOf, startControl } from './helpers/control.js';

const OPS = 'ops-token-0123456789abcdef';
const TOK_A = 'tenant-a-token-0123456789';
const tokens = { [OPS]: '*', [TOK_A]: ['a'] };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function scrape(address: string, auth?: string): Promise<{ status: number; body: string }> {
  const i = address.lastIndexOf(':');
  return new Promise((resolve, reject) => {
    const req = request({ host: address.slice(0, i), port: Number(address.slice(i + 1)), path: '/metrics', timeout: 5000, headers: auth ? { authorization: auth } : {} }, (res) => {
      let body = '';
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode!, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

test('open doors - wrong gRPC tokens are throttled per host: after the burst, calls are refused unchecked until the bucket refills', async (t) => {
  const r = await startControl({ authTokens: tokens, grpcAuthFailuresPerSecond: 5, grpcAuthFailureBurst: 10 });
  t.teardown(r.stop);
  const bad = r.control({ token: 'wrong-token-0123456789abcdef' });
  const t0 = Date.now();
  const codes: string[] = [];
  for (let i = 0; i < 60; i++) codes.push(await bad.stats().then(() => 'OK', (e: KvstashError) => e.code));
  const elapsed = (Date.now() - t0) / 1000;
  const unauth = codes.filter((c) => c === ErrorCode.UNAUTHENTICATED).length;
  const refused = codes.filter((c) => c === ErrorCode.RESOURCE_EXHAUSTED).length;
  t.is(unauth + refused, 60, codes.join(','));
  t.true(unauth <= 10 + Math.ceil(5 * elapsed) + 1, `${unauth} wrong tokens were checked in ${elapsed.toFixed(2)} s`);
  t.true(refused > 0);
  t.is(r.grpc!.throttle!.refused, refused);
  // The host's honest client waits with it; once the bucket refills, it gets through.
  const good = r.control({ token: OPS });
  let ok = false;
  const until = Date.now() + 10_000;
  while (!ok && Date.now() < until) {
    ok = await good.stats().then(() => true, (e: KvstashError) => { t.is(e.code, ErrorCode.RESOURCE_EXHAUSTED); return false; });
    if (!ok) await sleep(50);
  }
  t.true(ok, 'a valid token is served once the bucket has a token again');
});

test('open doors - AuthThrottle: hosts are separate, ports are not, refill follows the clock', (t) => {
  const th = new AuthThrottle(2, 3);
  const now = 1_000_000;
  for (let i = 0; i < 3; i++) { th.admit('ipv4:10.0.0.1:1000', now); th.failed(`ipv4:10.0.0.1:${1000 + i}`, now); }
  t.throws(() => th.admit('ipv4:10.0.0.1:2000', now), { message: /too many failed authentications from 10\.0\.0\.1; retry in 500 ms/ });
  t.notThrows(() => th.admit('ipv4:10.0.0.2:1000', now));
  t.notThrows(() => th.admit('ipv4:10.0.0.1:1000', now + 500));
  t.notThrows(() => new AuthThrottle(0, 0).admit('ipv4:10.0.0.1:1', now), 'perSecond 0 = off');
});

test('open doors - /metrics with auth on: 401 without an operator token, 200 with one, and no tenant or model labels', async (t) => {
  const r = await startControl({ authTokens: tokens, metrics: '127.0.0.1:0' });
  t.teardown(r.stop);
  r.sidecar.registerNamespace(nsOf('a', 'secret-model'));
  const ns = r.sidecar.registerNamespace(nsOf('a', 'secret-model'));
  const keys = blockHashes(Array.from({ length: 16 }, (_, i) => i), 16);
  r.sidecar.tiers.put(`${ns}/${keys[0]!.toString('hex')}`, Buffer.alloc(64));
  const { connectAuthenticated } = await import('../connector/control/auth-client.js');
  const a = await connectAuthenticated(r.endpoint, { token: TOK_A });
  t.teardown(() => a.client.close());
  await a.client.lookup(ns, keys);
  t.is((await scrape(r.metrics!.address)).status, 401);
  t.is((await scrape(r.metrics!.address, `Bearer ${TOK_A}`)).status, 401, 'a tenant token is not an operator token');
  t.is((await scrape(r.metrics!.address, 'Bearer nope')).status, 401);
  const ok = await scrape(r.metrics!.address, `Bearer ${OPS}`);
  t.is(ok.status, 200);
  const series = ok.body.split('\n').filter((l) => l.startsWith('kvstash_namespace_hit_blocks_total{'));
  t.is(series.length, 1, ok.body);
  t.notRegex(ok.body, /secret-model|tenant="a"/);
  t.is(r.metrics!.refused, 3);
});

test('open doors - metricsToken, metricsOpen and metricsTenantLabels override the defaults', async (t) => {
  const MT = 'metrics-token-0123456789';
  const r1 = await startControl({ authTokens: tokens, metrics: '127.0.0.1:0', metricsToken: MT, metricsTenantLabels: 'true' });
  t.teardown(r1.stop);
  t.is((await scrape(r1.metrics!.address, `Bearer ${OPS}`)).status, 401, 'with metricsToken only that token scrapes');
  t.is((await scrape(r1.metrics!.address, `Bearer ${MT}`)).status, 200);
  const r2 = await startControl({ authTokens: tokens, metrics: '127.0.0.1:0', metricsOpen: true });
  t.teardown(r2.stop);
  t.is((await scrape(r2.metrics!.address)).status, 200);
  const r3 = await startControl({ metrics: '127.0.0.1:0', metricsToken: MT });
  t.teardown(r3.stop);
  t.is((await scrape(r3.metrics!.address)).status, 401, 'a metricsToken applies with auth off too');
  const ns = r1.sidecar.registerNamespace(nsOf('a', 'labelled'));
  const c = await (await import('../connector/control/auth-client.js')).connectAuthenticated(r1.endpoint, { token: TOK_A });
  t.teardown(() => c.client.close());
  await c.client.lookup(ns, blockHashes(Array.from({ length: 16 }, (_, i) => i), 16));
  t.regex((await scrape(r1.metrics!.address, `Bearer ${MT}`)).body, /kvstash_namespace_hit_blocks_total\{[^}]*model="labelled"[^}]*tenant="a"/);
});

test('open doors - the lm:// server refuses to start while auth is on unless lmcacheAllowUnauthenticated', async (t) => {
  const settings = EXTENSIONS.flatMap((e) => e.settings ?? []);
  const on = loadConfig({ lmcache: ['127.0.0.1:0'], authTokens: tokens }, {}, undefined, settings);
  const err = t.throws(() => lmcacheExtension.plugins!(on)) as KvstashError;
  t.is(err.code, ErrorCode.CONFIG);
  t.regex(err.message, /cannot send credentials; set lmcacheAllowUnauthenticated=true/);
  const curve = loadConfig({ lmcache: ['127.0.0.1:0'], curveClients: { 'Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID': ['a'] } }, {}, undefined, settings);
  t.throws(() => lmcacheExtension.plugins!(curve), { message: /lmcacheAllowUnauthenticated/ });
  const allowed = loadConfig({ lmcache: ['127.0.0.1:0'], authTokens: tokens, lmcacheAllowUnauthenticated: true }, {}, undefined, settings);
  t.is((lmcacheExtension.plugins!(allowed) as unknown[]).length, 1);
  const off = loadConfig({ lmcache: ['127.0.0.1:0'] }, {}, undefined, settings);
  t.is((lmcacheExtension.plugins!(off) as unknown[]).length, 1);
});
