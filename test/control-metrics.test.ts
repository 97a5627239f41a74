/** Prometheus metrics scraped over HTTP after a known workload on the data socket and the control plane. */
import test from 'ava';
import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import path from 'node:path';
import { Dealer } from 'zeromq';
import { packHeader, unpackHeader } from '../protocol/codec.js';
import { blockHashes } from '../connector/keys.js';
import { nsOf, startControl } from './helpers/control.js';
import { blockFor, repoRoot } from './helpers/sidecar.js';

function scrape(address: string, urlPath = '/metrics'): Promise<{ status: number; type: string; body: string }> {
  const [host, port] = [address.slice(0, address.lastIndexOf(':')), Number(address.slice(address.lastIndexOf(':') + 1))];
  return new Promise((resolve, reject) => {
    const req = request({ host, port, path: urlPath, timeout: 5000 }, (res) => {
      let body = '';
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode!, type: String(res.headers['content-type']), body }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** Sum of the samples of `name` whose labels include all of `labels`. */
function value(body: string, name: string, labels: Record<string, string> = {}): number | undefined {
  let found: number | undefined;
  for (const line of body.split('\n')) {
    const m = /^([a-z_]+)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) found = (found ?? 0) + Number(m[3]);
  }
  return found;
}

test('control metrics - /metrics after a known workload: requests, latency, bytes, tiers, namespaces, gRPC', async (t) => {
  const r = await startControl({ metrics: '127.0.0.1:0' });
  t.teardown(r.stop);
  const c = r.client();
  const ns = await c.hello(nsOf('default'));
  const keys = blockHashes(Array.from({ length: 96 }, (_, i) => i), 16);
  await c.put(ns, keys.slice(0, 4), keys.slice(0, 4).map((k) => blockFor(k, 1000)));
  await r.sidecar.tiers.drain();
  t.is((await c.lookup(ns, keys.slice(0, 4))).hit, 4);
  t.is((await c.lookup(ns, keys)).hit, 4);
  await c.get(ns, [...keys.slice(0, 3), keys[5]!]);
  await t.throwsAsync(c.request({ op: 'LOOKUP', ns: 'f'.repeat(32), keys: keys[0]! }));
  const g = r.control();
  await g.stats();
  await t.throwsAsync(g.lookup({}));

  const { status, type, body } = await scrape(r.metrics!.address);
  t.is(status, 200);
  t.regex(type, /text\/plain/);
  t.is(value(body, 'kvstash_requests_total', { op: 'PUT', code: 'OK' }), 1);
  t.is(value(body, 'kvstash_requests_total', { op: 'LOOKUP', code: 'OK' }), 2);
  t.is(value(body, 'kvstash_requests_total', { op: 'LOOKUP', code: 'KVS_NS_UNKNOWN' }), 1);
  t.is(value(body, 'kvstash_requests_total', { op: 'GET', code: 'OK' }), 1);
  t.is(value(body, 'kvstash_request_duration_seconds_count', { op: 'LOOKUP' }), 3);
  t.is(value(body, 'kvstash_request_duration_seconds_bucket', { op: 'GET', le: '+Inf' }), 1);
  t.true(value(body, 'kvstash_received_bytes_total', { op: 'PUT' })! > 4000);
  t.true(value(body, 'kvstash_sent_bytes_total', { op: 'GET' })! > 3000);
  t.is(value(body, 'kvstash_tier_blocks', { tier: 'dram', medium: 'CPU' }), 4);
  t.is(value(body, 'kvstash_tier_blocks', { tier: 'file', medium: 'DISK' }), 4);
  t.is(value(body, 'kvstash_tier_bytes', { tier: 'dram' }), 4000);
  t.is(value(body, 'kvstash_tier_hits_total', { tier: 'dram' }), 3);
  t.is(value(body, 'kvstash_tier_misses_total', { tier: 'dram' }), 1);
  t.is(value(body, 'kvstash_tier_write_queue_depth', { tier: 'file' }), 0);
  t.is(value(body, 'kvstash_tier_checksum_failures_total', { tier: 'file' }), 0);
  t.is(value(body, 'kvstash_namespace_hit_blocks_total', { namespace: ns, tenant: 'default', model: 'm' }), 4 + 4 + 3);
  t.is(value(body, 'kvstash_namespace_miss_blocks_total', { namespace: ns }), 0 + 2 + 1);
  t.is(value(body, 'kvstash_errors_total', { code: 'KVS_NS_UNKNOWN' }), 1);
  t.is(value(body, 'kvstash_grpc_requests_total', { method: 'Stats', code: 'OK' }), 1);
  t.is(value(body, 'kvstash_grpc_requests_total', { method: 'Lookup', code: 'KVS_INVALID_ARGUMENT' }), 1);
  t.is(value(body, 'kvstash_pin_budget_bytes'), 32 * 2 ** 20);
  t.is(value(body, 'kvstash_blocks'), 4);
  t.is((await scrape(r.metrics!.address, '/')).status, 404);
  // process and Node runtime metrics (prom-client defaults)
  t.true(value(body, 'process_cpu_user_seconds_total')! > 0);
  t.true(value(body, 'process_resident_memory_bytes')! > 1e6);
  t.true(value(body, 'nodejs_heap_size_used_bytes')! > 1e5);
  t.not(value(body, 'nodejs_eventloop_lag_seconds'), undefined);
});

test('control metrics - per-namespace series are bounded: top N namespaces, the rest as "other", counters monotonic', async (t) => {
  const r = await startControl({ metrics: '127.0.0.1:0', metricsTopNamespaces: 2 });
  t.teardown(r.stop);
  const c = r.client();
  const keys = blockHashes(Array.from({ length: 16 }, (_, i) => i), 16);
  const ids: string[] = [];
  for (let i = 0; i < 5; i++) {
    const ns = await c.hello(nsOf('default', `model-${i}`));
    ids.push(ns);
    await c.put(ns, keys, [Buffer.alloc(16)]);
    for (let j = 0; j < 5 - i; j++) await c.lookup(ns, keys);
  }
  const first = (await scrape(r.metrics!.address)).body;
  const series = first.split('\n').filter((l) => l.startsWith('kvstash_namespace_hit_blocks_total{'));
  t.is(series.length, 3, 'two namespaces + other');
  t.is(value(first, 'kvstash_namespace_hit_blocks_total', { namespace: ids[0]! }), 5);
  t.is(value(first, 'kvstash_namespace_hit_blocks_total', { namespace: ids[1]! }), 4);
  t.is(value(first, 'kvstash_namespace_hit_blocks_total', { namespace: 'other' }), 3 + 2 + 1);
  // A namespace becoming the busiest later does not take a slot (that would make "other" go down).
  for (let j = 0; j < 20; j++) await c.lookup(ids[4]!, keys);
  const second = (await scrape(r.metrics!.address)).body;
  t.is(value(second, 'kvstash_namespace_hit_blocks_total', { namespace: ids[4]! }), undefined);
  t.is(value(second, 'kvstash_namespace_hit_blocks_total', { namespace: 'other' }), 3 + 2 + 1 + 20);
});

test('control metrics - every metric the Grafana dashboard queries is exposed', async (t) => {
  const r = await startControl({ metrics: '127.0.0.1:0', eventsPub: 'tcp://127.0.0.1:0' });
  t.teardown(r.stop);
  const { body } = await scrape(r.metrics!.address);
  const types = new Set([...body.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]));
  const dash = readFileSync(path.join(repoRoot, 'examples', 'grafana', 'kvstash-dashboard.json'), 'utf8');
  const used = new Set([...dash.matchAll(/(?:kvstash|process|nodejs)_[a-z0-9_]+/g)].map((m) => m[0].replace(/_(bucket|sum|count)$/, '')).filter((n) => n !== 'kvstash_sidecar'));
  t.true(used.size > 20);
  for (const name of used) t.true(types.has(name), `${name} is queried by the dashboard but not exposed`);
});

test('control metrics - an integer beyond 2^53 in a header is counted as KVS_BAD_FIELD, never code="undefined"', async (t) => {
  const r = await startControl({ metrics: '127.0.0.1:0' });
  t.teardown(r.stop);
  const d = new Dealer({ receiveTimeout: 10_000 });
  t.teardown(() => d.close());
  d.connect(r.endpoint);
  for (const h of [{ v: 1, id: 2n ** 60n, op: 'PING' }, { v: 2n ** 63n, id: 7, op: 'PING' }, { v: 1, id: 8, op: 'STATS', extra: 2n ** 54n }]) {
    await d.send([packHeader(h)]);
    const [reply] = await d.receive();
    const rh = unpackHeader(reply!) as { status: string; code: string; id: number };
    t.is(rh.status, 'ERR');
    t.is(rh.code, 'KVS_BAD_FIELD');
  }
  const { body } = await scrape(r.metrics!.address);
  t.is(value(body, 'kvstash_errors_total', { code: 'KVS_BAD_FIELD' }), 3);
  t.notRegex(body, /code="undefined"/);
});
