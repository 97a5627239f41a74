/** Tenancy and authentication: CURVE + ZAP and AUTH on the data socket, bearer tokens and TLS on gRPC. Every op across tenants is refused. */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { curveKeyPair } from 'zeromq';
import { KvstashClient } from '../connector/client.js';
import { blockHashes, namespaceId } from '../connector/keys.js';
import { authHeader, connectAuthenticated, secureSocket } from '../connector/control/auth-client.js';
import { ControlClient } from '../connector/control/grpc-client.js';
import { ErrorCode, KvstashError } from '../protocol/errors.js';
import { nsOf, startControl } from './helpers/control.js';
import { blockFor } from './helpers/sidecar.js';

const server = curveKeyPair();
const keyA = curveKeyPair();
const keyB = curveKeyPair();
const stranger = curveKeyPair();
const TOK_A = 'token-a-0123456789abcdef';
const TOK_B = 'token-b-0123456789abcdef';
const TOK_OPS = 'token-ops-0123456789abcdef';
const AUTH = {
  authTokens: { [TOK_A]: ['a'], [TOK_B]: ['b'], [TOK_OPS]: '*' },
  curveSecretKey: server.secretKey,
  curveClients: { [keyA.publicKey]: ['a'], [keyB.publicKey]: ['b'] },
};
const NS_A = nsOf('a');
const NS_B = nsOf('b');
const keys = blockHashes(Array.from({ length: 64 }, (_, i) => i), 16);
const curve = (k: { publicKey: string; secretKey: string }) => ({ curve: { ...k, serverKey: server.publicKey } });

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'OK';
  } catch (err) {
    return (err as KvstashError).code;
  }
}

test('control tenancy - data socket: CURVE wrong key refused at the handshake, right key served after AUTH', async (t) => {
  const r = await startControl(AUTH);
  t.teardown(r.stop);
  const t0 = Date.now();
  const wrong = await code(connectAuthenticated(r.endpoint, curve(stranger), { timeoutMs: 5000 }));
  t.is(wrong, ErrorCode.UNAUTHENTICATED);
  t.true(Date.now() - t0 < 4000, 'refused at the handshake, not by a timeout');
  t.is(await code(connectAuthenticated(r.endpoint, { curve: { ...keyA, serverKey: keyB.publicKey } }, { timeoutMs: 800 })), ErrorCode.TIMEOUT, 'wrong server key: no answer');
  const a = await connectAuthenticated(r.endpoint, curve(keyA));
  t.teardown(() => a.client.close());
  t.is(a.principal, `curve:${keyA.publicKey}`);
  t.deepEqual(a.tenants, ['a']);
  const ns = await a.client.hello(NS_A);
  t.deepEqual(await a.client.put(ns, keys.slice(0, 2), keys.slice(0, 2).map((k) => blockFor(k, 64))), [0, 0]);
  t.is((await a.client.lookup(ns, keys)).hit, 2);
  // A listed key that skipped AUTH: only PING.
  const sec = secureSocket(curve(keyB));
  const lazy = new KvstashClient(r.endpoint, { configure: sec.configure });
  t.teardown(() => lazy.close());
  t.regex(await lazy.ping(), /kvstash/);
  t.is(await code(lazy.hello(NS_B)), ErrorCode.UNAUTHENTICATED);
  t.is(await code(lazy.stats()), ErrorCode.UNAUTHENTICATED);
  t.is(await code(lazy.request({ op: 'AUTH', method: 'curve', key: keyB.publicKey, ts: Date.now(), proof: Buffer.alloc(32) })), ErrorCode.UNAUTHENTICATED, 'wrong proof');
  // Key A's holder claiming key B: the proof needs B's secret.
  const forged = authHeader({ curve: { publicKey: keyB.publicKey, secretKey: keyA.secretKey, serverKey: server.publicKey } }, sec.routingId);
  t.is(await code(lazy.request(forged)), ErrorCode.UNAUTHENTICATED);
  t.is(await code(lazy.request({ ...authHeader(curve(keyB), sec.routingId), ts: Date.now() - 3_600_000 })), ErrorCode.UNAUTHENTICATED, 'stale ts');
  t.is(await code(lazy.request({ op: 'AUTH', method: 'password', key: 'x', ts: 1, proof: Buffer.alloc(1) })), ErrorCode.BAD_FIELD);
  t.is(await code(lazy.request(authHeader(curve(keyB), sec.routingId))), 'OK');
  t.is(await code(lazy.hello(NS_B)), 'OK');
  t.true(r.auth!.counters.authFailed >= 3);
});

test('control tenancy - data socket: HELLO, LOOKUP, GET, PUT, EXISTS, DELETE across tenants are all refused', async (t) => {
  const r = await startControl(AUTH);
  t.teardown(r.stop);
  const a = await connectAuthenticated(r.endpoint, curve(keyA));
  const b = await connectAuthenticated(r.endpoint, { ...curve(keyB), token: TOK_B });
  t.teardown(() => { a.client.close(); b.client.close(); });
  t.deepEqual(b.tenants, ['b'], 'token principal over a CURVE connection');
  const nsB = await b.client.hello(NS_B);
  const blocks = keys.map((k) => blockFor(k, 256));
  await b.client.put(nsB, keys, blocks);
  t.is(nsB, namespaceId(NS_B));
  const k = Buffer.concat(keys);
  const attempts: Record<string, Promise<unknown>> = {
    HELLO: a.client.hello(NS_B),
    LOOKUP: a.client.request({ op: 'LOOKUP', ns: nsB, keys: k }),
    GET: a.client.request({ op: 'GET', ns: nsB, keys: k }),
    PUT: a.client.request({ op: 'PUT', ns: nsB, keys: keys[0]!, sizes: [3] }, [Buffer.from('bad')]),
    EXISTS: a.client.request({ op: 'EXISTS', ns: nsB, keys: k }),
    DELETE: a.client.request({ op: 'DELETE', ns: nsB, keys: k }),
  };
  for (const [op, p] of Object.entries(attempts)) t.is(await code(p), ErrorCode.PERMISSION_DENIED, op);
  t.deepEqual(await b.client.exists(nsB, keys), { exists: keys.map(() => true), prefix: keys.length }, "B's blocks untouched");
  (await b.client.get(nsB, keys)).forEach((v, i) => t.true(v!.equals(blocks[i]!)));
  t.regex(String((await a.client.stats()).server), /kvstash/, 'aggregate STATS is allowed to any authenticated principal');
});

test('control tenancy - gRPC: tokens required; a tenant token can never read, list, pin, evict, clear, move or watch another tenant', async (t) => {
  const r = await startControl(AUTH);
  t.teardown(r.stop);
  const b = await connectAuthenticated(r.endpoint, curve(keyB));
  t.teardown(() => b.client.close());
  const nsB = await b.client.hello(NS_B);
  await b.client.put(nsB, keys, keys.map((k) => blockFor(k, 128)));
  await r.sidecar.tiers.drain();
  const none = r.control();
  const bad = r.control({ token: 'not-a-token-0123456789' });
  const ga = r.control({ token: TOK_A });
  const gb = r.control({ token: TOK_B });
  const ops = r.control({ token: TOK_OPS });
  t.is(await code(none.stats()), ErrorCode.UNAUTHENTICATED);
  t.is(await code(bad.health()), ErrorCode.UNAUTHENTICATED);
  const prefix = { hashes: { hashes: keys } };
  const selB = { namespace: { id: nsB }, prefix };
  t.like(await gb.pin({ selector: selB, tag: 'session:b' }), { pinned: 4 });
  const drain = async (s: { messages: AsyncIterable<unknown> }) => { for await (const _ of s.messages) void _; };
  const refusals: Record<string, Promise<unknown>> = {
    'Lookup by id': ga.lookup({ namespace: { id: nsB }, prefix }),
    'Lookup by descriptor': ga.lookup({ namespace: { descriptor: NS_B }, prefix }),
    'Pin namespace': ga.pin({ selector: selB, tag: 'x' }),
    'Pin tenant': ga.pin({ selector: { tenant: 'b' }, tag: 'x' }),
    'Unpin inside B': ga.unpin({ tag: 'session:b', selector: { tenant: 'b' } }),
    'Evict': ga.evict({ selector: selB }),
    'Evict tenant': ga.evict({ selector: { tenant: 'b' }, tier: 'dram' }),
    'Clear namespace': drain(ga.stream('Clear', { selector: { namespace: { id: nsB } } })),
    'Clear tenant': drain(ga.stream('Clear', { selector: { tenant: 'b' }, include_pinned: true })),
    'Move': drain(ga.stream('Move', { selector: { tenant: 'b' }, to_tier: 'file' })),
    'Watch tenant': drain(ga.stream('WatchTierEvents', { tenant: 'b' })),
    'Watch namespace': drain(ga.stream('WatchTierEvents', { namespace: { id: nsB } })),
  };
  for (const [what, p] of Object.entries(refusals)) t.is(await code(p), ErrorCode.PERMISSION_DENIED, what);
  t.like(await ga.unpin({ tag: 'session:b' }), { unpinned: 0 }, "a tag of the same name never unpins B's blocks");
  t.is((await gb.stats()).pins.blocks, 4);
  t.is(r.sidecar.tiers.index.size, 4, 'nothing of B was removed');
  // A's unfiltered watch never sees B's blocks; the ops token sees everything.
  const wa = ga.stream('WatchTierEvents', {});
  const wo = ops.stream('WatchTierEvents', {});
  await Promise.all([wa.ready, wo.ready]);
  const a = await connectAuthenticated(r.endpoint, { token: TOK_A, curve: { ...keyA, serverKey: server.publicKey } });
  t.teardown(() => a.client.close());
  const nsA = await a.client.hello(NS_A);
  const more = blockHashes(Array.from({ length: 32 }, (_, i) => 1000 + i), 16);
  await b.client.put(nsB, more, more.map(() => Buffer.alloc(8)));
  await a.client.put(nsA, more.slice(0, 1), [Buffer.alloc(8)]);
  const first = async (s: typeof wa) => { for await (const e of s.messages) return e; return undefined; };
  const ea = await first(wa);
  t.is(ea!.namespace_id, nsA);
  const eo = await first(wo);
  t.is(eo!.namespace_id, nsB);
  wa.call.cancel();
  wo.call.cancel();
  t.like(await ga.lookup({ namespace: { id: nsA }, prefix: { hashes: { hashes: more.slice(0, 1) } } }), { hit_blocks: 1 });
  let last: Record<string, unknown> = {};
  for await (const m of ops.stream('Clear', { selector: { tenant: 'b' }, include_pinned: true }).messages) last = m;
  t.like(last, { total: 6, changed: 6, finished: true });
});

test('control tenancy - gRPC over TLS with a bearer token; a plaintext client cannot talk to it', async (t) => {
  const dir = path.join((await import('node:os')).tmpdir(), `kvstash-tls-${process.pid}-${Date.now()}`);
  (await import('node:fs')).mkdirSync(dir, { recursive: true });
  t.teardown(async () => (await import('node:fs')).rmSync(dir, { recursive: true, force: true }));
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
    '-keyout', path.join(dir, 'key.pem'), '-out', path.join(dir, 'cert.pem')], { stdio: 'ignore', timeout: 20_000 });
  const r = await startControl({ authTokens: { [TOK_OPS]: '*' }, grpcTlsCert: path.join(dir, 'cert.pem'), grpcTlsKey: path.join(dir, 'key.pem') });
  t.teardown(r.stop);
  const ok = new ControlClient(r.grpc!.address, { token: TOK_OPS, tlsCaFile: path.join(dir, 'cert.pem'), tlsServerName: 'localhost', deadlineMs: 3000 });
  const plain = new ControlClient(r.grpc!.address, { token: TOK_OPS, deadlineMs: 1500 });
  const noToken = new ControlClient(r.grpc!.address, { tlsCaFile: path.join(dir, 'cert.pem'), tlsServerName: 'localhost', deadlineMs: 3000 });
  t.teardown(() => { ok.close(); plain.close(); noToken.close(); });
  t.is((await ok.health()).status, 'SERVING');
  t.not(await code(plain.health()), 'OK');
  t.is(await code(noToken.health()), ErrorCode.UNAUTHENTICATED);
});

test('control tenancy - token auth without CURVE on a tcp data socket', async (t) => {
  const r = await startControl({ authTokens: { [TOK_A]: ['a'] }, endpoints: ['tcp://127.0.0.1:0'] });
  t.teardown(r.stop);
  const ep = r.sidecar.endpoints[0]!;
  const a = await connectAuthenticated(ep, { token: TOK_A });
  t.teardown(() => a.client.close());
  t.is(await code(a.client.hello(NS_A)), 'OK');
  t.is(await code(a.client.hello(NS_B)), ErrorCode.PERMISSION_DENIED);
  t.is(await code(connectAuthenticated(ep, { token: TOK_B })), ErrorCode.UNAUTHENTICATED);
  const anon = new KvstashClient(ep);
  t.teardown(() => anon.close());
  t.is(await code(anon.hello(NS_A)), ErrorCode.UNAUTHENTICATED, 'no AUTH at all');
  t.is(await code(anon.request(authHeader({ token: TOK_A }, Buffer.from('x')))), ErrorCode.UNAUTHENTICATED, 'an auto routing id cannot be bound');
});
