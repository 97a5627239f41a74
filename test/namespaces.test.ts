/**
 * Namespaces cannot be exhausted by one tenant (issue 9 item 5): per-tenant quotas, expiry of empty idle
 * namespaces (persisted), and DropNamespaces over gRPC and the CLI. Real sidecars, real sockets, real files.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { KvstashClient } from '../connector/client.js';
import { blockHashes, namespaceId } from '../connector/keys.js';
import { Sidecar } from '../connector/server/sidecar.js';
import { ErrorCode, KvstashError } from '../protocol/errors.js';
import { nsOf, startControl } from './helpers/control.js';
import { blockFor, repoRoot, startSidecar } from './helpers/sidecar.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(10);
  }
}
const keys = blockHashes(Array.from({ length: 32 }, (_, i) => i), 16);

test('namespaces - a tenant past its quota gets KVS_RESOURCE_EXHAUSTED; other tenants and known namespaces are unaffected', async (t) => {
  const r = await startSidecar({ namespacesPerTenant: 3 });
  t.teardown(r.stop);
  const c = r.client();
  for (let i = 0; i < 3; i++) await c.hello(nsOf('greedy', `m${i}`));
  const err = await t.throwsAsync(c.hello(nsOf('greedy', 'm3')));
  t.is((err as KvstashError).code, ErrorCode.RESOURCE_EXHAUSTED);
  t.regex((err as KvstashError).message, /tenant "greedy" already holds 3 namespaces/);
  t.is(await c.hello(nsOf('greedy', 'm1')), namespaceId(nsOf('greedy', 'm1')), 'a known namespace still answers');
  t.truthy(await c.hello(nsOf('polite', 'm0')), 'another tenant still registers');
  t.is(r.sidecar.nsRegistry.counters.refusedQuota, 1);
});

test('namespaces - empty namespaces expire after namespaceIdleSeconds (on the sidecar timer); ones holding blocks stay; expiry is persisted', async (t) => {
  const r = await startSidecar({ namespaceIdleSeconds: 1 });
  t.teardown(r.stop);
  const c = r.client();
  const full = await c.hello(nsOf('a', 'full'));
  const empty = await c.hello(nsOf('a', 'empty'));
  await c.put(full, keys.slice(0, 1), [blockFor(keys[0]!, 512)]);
  await until(() => !r.sidecar.namespaces.has(empty), 15_000, 'the empty namespace to expire');
  t.true(r.sidecar.namespaces.has(full));
  const err = await t.throwsAsync(c.request({ op: 'LOOKUP', ns: empty, keys: Buffer.concat(keys) })); // raw: no automatic re-HELLO
  t.is((err as KvstashError).code, ErrorCode.NS_UNKNOWN);
  t.is(await c.hello(nsOf('a', 'empty')), empty, 'HELLO registers it again');
  // Expire it again and restart: the persisted file no longer has it.
  await until(() => !r.sidecar.namespaces.has(empty), 15_000, 'the empty namespace to expire again');
  const config = r.sidecar.config;
  await r.sidecar.stop();
  const file = JSON.parse(readFileSync(path.join(config.fileRoot, 'namespaces.json'), 'utf8')) as Record<string, unknown>;
  t.deepEqual(Object.keys(file), [full]);
  const again = new Sidecar({ ...config, namespaceIdleSeconds: 0 });
  await again.start();
  t.teardown(() => again.stop());
  t.deepEqual([...again.namespaces.keys()], [full]);
});

test('namespaces - a use (touch) restarts a namespace\'s idle time; expiry needs idleMs without one', (t) => {
  // Registry level, with an explicit clock: a touch (any data op naming it) restarts the idle time.
  return startSidecar({ namespaceIdleSeconds: 60, fileRoot: '' }).then(async (r) => {
    t.teardown(r.stop);
    const c = r.client();
    const a = await c.hello(nsOf('a', 'used'));
    const b = await c.hello(nsOf('a', 'unused'));
    const t0 = Date.now();
    r.sidecar.nsRegistry.touch(a, t0 + 50_000);
    t.deepEqual(r.sidecar.expireNamespaces(t0 + 70_000), [b]);
    t.deepEqual(r.sidecar.expireNamespaces(t0 + 111_000), [a]);
  });
});

test('namespaces - DropNamespaces over gRPC: keeps namespaces with blocks unless include_blocks; respects tenancy', async (t) => {
  const OPS = 'ops-token-0123456789abcdef';
  const TOK_B = 'tenant-b-token-0123456789';
  const r = await startControl({ authTokens: { [OPS]: '*', [TOK_B]: ['b'] }, curveSecretKey: '' });
  t.teardown(r.stop);
  const sc = r.sidecar;
  const ids = [0, 1, 2].map((i) => sc.registerNamespace(nsOf('a', `m${i}`)));
  sc.tiers.put(`${ids[0]}/${keys[0]!.toString('hex')}`, Buffer.alloc(100, 1));
  const ops = r.control({ token: OPS });
  const denied = await t.throwsAsync(r.control({ token: TOK_B }).dropNamespaces({ selector: { tenant: 'a' } }));
  t.is((denied as KvstashError).code, ErrorCode.PERMISSION_DENIED);
  const first = await ops.dropNamespaces({ selector: { tenant: 'a' } });
  t.like(first, { dropped: 2, kept: 1, blocks_removed: 0 });
  t.deepEqual([...first.dropped_ids].sort(), [ids[1], ids[2]].sort());
  t.deepEqual(sc.nsRegistry.ofTenant('a'), [ids[0]]);
  const second = await ops.dropNamespaces({ selector: { namespace: { id: ids[0] } }, include_blocks: true });
  t.like(second, { dropped: 1, kept: 0, blocks_removed: 1 });
  t.is(sc.namespaces.size, 0);
  t.is(sc.tiers.index.size, 0);
});

test('namespaces - `kvstash drop-namespaces --tenant` against a live sidecar (CLI, --json)', async (t) => {
  const r = await startControl({});
  t.teardown(r.stop);
  for (let i = 0; i < 4; i++) r.sidecar.registerNamespace(nsOf('x', `m${i}`));
  r.sidecar.registerNamespace(nsOf('y', 'm0'));
  const res = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(process.execPath, ['--import=tsx', path.join(repoRoot, 'cli', 'kvstash.ts'), 'drop-namespaces', '--tenant', 'x', '--grpc', r.grpc!.address, '--json'],
      { cwd: repoRoot, timeout: 40_000, env: { ...process.env, KVSTASH_TOKEN: '' } },
      (err, stdout, stderr) => resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr }));
  });
  t.is(res.code, 0, res.stderr);
  t.like(JSON.parse(res.stdout), { dropped: 4, kept: 0 });
  t.deepEqual([...r.sidecar.namespaces.values()].map((d) => d.tenant), ['y']);
});

test('namespaces - a client whose namespace was dropped gets KVS_NS_UNKNOWN; the Node client recovers with HELLO by itself', async (t) => {
  const r = await startSidecar();
  t.teardown(r.stop);
  const c = new KvstashClient(r.endpoint, { timeoutMs: 5000 });
  t.teardown(() => c.close());
  const ns = await c.hello(nsOf('a'));
  r.sidecar.nsRegistry.drop([ns]);
  const err = await t.throwsAsync(c.request({ op: 'PUT', ns, keys: keys[0]!, sizes: [8] }, [Buffer.alloc(8)]));
  t.is((err as KvstashError).code, ErrorCode.NS_UNKNOWN);
  t.deepEqual(await c.put(ns, keys.slice(0, 1), [Buffer.alloc(8)]), [0]);
  t.true(r.sidecar.namespaces.has(ns));
});
