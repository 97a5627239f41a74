/**
 * Data-socket auth from Python (adapters/python/kvstash/auth.py + client.py) against real sidecars with the control
 * plane's DataAuthPlugin (CURVE + ZAP + AUTH, bearer tokens), driven through test/integration/py/auth_client.py:
 * principals work in their tenant and nowhere else, refusals are clear and early, the vLLM / SGLang adapters take
 * their credentials from extra config or KVSTASH_* variables, and a restarted sidecar gets a new AUTH.
 */
import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { curveKeyPair } from 'zeromq';
import { curveShared, tokenId } from '../../connector/control/auth.js';
import { ErrorCode } from '../../protocol/errors.js';
import { startControl, type ControlRunning } from '../helpers/control.js';
import { repoRoot, tempDir, uniqueIpc } from '../helpers/sidecar.js';

const python = process.env.KVSTASH_PYTHON || '/usr/bin/python3';
const script = path.join(repoRoot, 'test', 'integration', 'py', 'auth_client.py');

const server = curveKeyPair();
const keyA = curveKeyPair();
const keyB = curveKeyPair();
const stranger = curveKeyPair();
const TOK_A = 'py-token-a-0123456789abcdef';
const TOK_B = 'py-token-b-0123456789abcdef';
const TOKENS = { [TOK_A]: ['a'], [TOK_B]: ['b'] };
const CURVE_AUTH = { authTokens: TOKENS, curveSecretKey: server.secretKey, curveClients: { [keyA.publicKey]: ['a'], [keyB.publicKey]: ['b'] }, grpc: '' };

type Reply = { ok: boolean; code?: string; message?: string; ms: number; [k: string]: unknown };

/** The Python harness as a child process: one JSON line per command, each with a deadline; killed in teardown. */
function harness(t: ExecutionContext, env: Record<string, string> = {}) {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^KVSTASH_(TOKEN|CURVE_)/.test(k)));
  const p = spawn(python, [script], { env: { ...clean, PYTHONPATH: path.join(repoRoot, 'adapters', 'python'), ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  p.stderr.on('data', (d) => { stderr += d; });
  const lines: string[] = [];
  let waiter: (() => void) | undefined;
  createInterface({ input: p.stdout }).on('line', (l) => { lines.push(l); waiter?.(); });
  const life = setTimeout(() => p.kill('SIGKILL'), 60_000);
  t.teardown(() => { clearTimeout(life); p.kill('SIGKILL'); });
  return async (cmd: Record<string, unknown>, deadlineMs = 15_000): Promise<Reply> => {
    if (p.exitCode !== null || p.signalCode !== null) throw new Error(`harness exited (${p.exitCode ?? p.signalCode}):\n${stderr}`);
    p.stdin.write(JSON.stringify(cmd) + '\n');
    const t0 = Date.now();
    while (lines.length === 0) {
      if (Date.now() - t0 > deadlineMs || p.exitCode !== null) throw new Error(`harness: no answer to ${String(cmd.cmd)} within ${deadlineMs} ms:\n${stderr}`);
      await new Promise<void>((resolve) => { waiter = resolve; setTimeout(resolve, 50); });
    }
    const r = JSON.parse(lines.shift()!) as Reply;
    if (r.code === 'HARNESS') throw new Error(`harness error in ${String(cmd.cmd)}: ${r.message}\n${String(r.trace)}`);
    return r;
  };
}

function keyFiles(t: ExecutionContext) {
  const dir = tempDir('kvstash-pyauth-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = (name: string, text: string) => { const p = path.join(dir, name); writeFileSync(p, text, { mode: 0o600 }); return p; };
  return {
    dir,
    serverPub: file('server.pub', `${server.publicKey}\n`), // one key per line, as curveSecretKey's @file
    aKeys: file('a.keys', `public ${keyA.publicKey}\nsecret ${keyA.secretKey}\n`), // `kvstash keygen`
    bJson: file('b.json', JSON.stringify(keyB) + '\n'), // `kvstash keygen --json`
    tokenB: file('token-b', `${TOK_B}\n`),
  };
}

const bound = (r: ControlRunning, ridHex: unknown) => r.auth!.principal(Buffer.from(String(ridHex), 'hex'))?.id;

test('python auth - CURVE key and token principals HELLO/PUT/GET in their tenant; every op on another tenant is KVS_PERMISSION_DENIED', async (t) => {
  t.timeout(60_000);
  const r = await startControl(CURVE_AUTH);
  t.teardown(r.stop);
  const f = keyFiles(t);
  const py = harness(t);
  const a = await py({ cmd: 'open', name: 'a', endpoint: r.endpoint, creds: { curve_server_key: `@${f.serverPub}`, curve_secret_key: f.aKeys } });
  const b = await py({ cmd: 'open', name: 'b', endpoint: r.endpoint, creds: { curve_server_key: server.publicKey, curve_secret_key: `@${f.bJson}`, token: `@${f.tokenB}` } });
  t.true(a.ok && b.ok, JSON.stringify([a, b]));

  const ra = await py({ cmd: 'roundtrip', name: 'a', tenant: 'a', n: 8, seed: 1 });
  t.true(ra.ok, JSON.stringify(ra));
  t.deepEqual(ra.put, Array(8).fill(0));
  t.true(ra.equal as boolean, 'blocks read back bitwise');
  t.is(ra.hit, 8);
  t.is(ra.principal, `curve:${keyA.publicKey}`);
  t.deepEqual(ra.tenants, ['a']);
  t.is(bound(r, a.routing_id), `curve:${keyA.publicKey}`, 'the sidecar bound the Python routing id to key A');

  const rb = await py({ cmd: 'roundtrip', name: 'b', tenant: 'b', n: 4, seed: 2, many: true });
  t.true(rb.ok && rb.equal, JSON.stringify(rb));
  t.is(rb.principal, tokenId(TOK_B), 'a token wins over the CURVE key (as in the Node client)');
  t.is(bound(r, b.routing_id), tokenId(TOK_B));

  for (const op of ['lookup', 'get', 'exists', 'put', 'delete']) {
    const x = await py({ cmd: 'try', name: 'a', op, ns: rb.ns, seed: 2 });
    t.is(x.code, ErrorCode.PERMISSION_DENIED, `${op} on tenant b: ${JSON.stringify(x)}`);
  }
  const hello = await py({ cmd: 'try', name: 'a', op: 'hello', tenant: 'b' });
  t.is(hello.code, ErrorCode.PERMISSION_DENIED);
  t.regex(String(hello.message), /may not access tenant "b"/);
  t.true((await py({ cmd: 'try', name: 'a', op: 'stats' })).ok, 'STATS is open to any principal');
  const again = await py({ cmd: 'roundtrip', name: 'b', tenant: 'b', n: 4, seed: 2 });
  t.deepEqual(again.put, Array(4).fill(1), "b's blocks are still there");
  t.true(again.equal as boolean, "b's blocks unchanged by a's forged PUT and DELETE");
});

test('python auth - wrong token, unlisted or throw-away CURVE key, wrong server key, missing CURVE: KVS_UNAUTHENTICATED long before the deadline; bad settings: KVS_CONFIG', async (t) => {
  t.timeout(60_000);
  const curveSide = await startControl(CURVE_AUTH);
  t.teardown(curveSide.stop);
  const tokenSide = await startControl({ authTokens: TOKENS, grpc: '' });
  t.teardown(tokenSide.stop);
  const py = harness(t);
  const refused = async (name: string, endpoint: string, creds: Record<string, string>, why: RegExp) => {
    const o = await py({ cmd: 'open', name, endpoint, timeout_ms: 3000, creds });
    t.true(o.ok, JSON.stringify(o));
    const x = await py({ cmd: 'try', name, op: 'hello', tenant: 'a' });
    t.is(x.code, ErrorCode.UNAUTHENTICATED, `${name}: ${JSON.stringify(x)}`);
    t.regex(String(x.message), why, name);
    t.true(x.ms < 1500, `${name}: refused after ${x.ms} ms, deadline 3000 ms`);
  };
  await refused('stranger', curveSide.endpoint, { curve_server_key: server.publicKey, curve_secret_key: stranger.secretKey }, /refused this client's CURVE key .* not in its curveClients/);
  await refused('wrong-server-key', curveSide.endpoint, { curve_server_key: stranger.publicKey, curve_secret_key: keyA.secretKey }, /CURVE handshake .* failed/);
  await refused('no-curve', curveSide.endpoint, { token: TOK_A }, /CURVE/);
  await refused('throw-away-key', curveSide.endpoint, { curve_server_key: server.publicKey, token: TOK_A }, /throw-away CURVE key/);
  await refused('wrong-token', tokenSide.endpoint, { token: 'py-token-x-0123456789abcdef' }, /AUTH as token:[0-9a-f]{16} refused .*unknown key or wrong proof/);
  t.is(tokenSide.auth!.counters.authFailed, 1, 'the wrong token was refused by the AUTH op itself (once, no retry loop)');

  await py({ cmd: 'open', name: 'anon', endpoint: tokenSide.endpoint, timeout_ms: 3000 });
  const anon = await py({ cmd: 'try', name: 'anon', op: 'hello', tenant: 'a' });
  t.is(anon.code, ErrorCode.UNAUTHENTICATED, 'no credentials: refused by the guard');
  t.regex(String(anon.message), /requires AUTH first/);

  await py({ cmd: 'open', name: 'plain', endpoint: tokenSide.endpoint, creds: { token: TOK_A } });
  const ok = await py({ cmd: 'roundtrip', name: 'plain', tenant: 'a', n: 3, seed: 3 });
  t.true(ok.ok && ok.equal, `token over plain ipc: ${JSON.stringify(ok)}`);
  const intTs = await py({ cmd: 'auth_int_ts', name: 'plain', token: TOK_A });
  t.true(intTs.ok, `AUTH with a msgpack-integer ts: ${JSON.stringify(intTs)}`);

  const config = async (creds: Record<string, string>, why: RegExp) => {
    const x = await py({ cmd: 'open', name: 'bad', endpoint: tokenSide.endpoint, creds });
    t.is(x.code, ErrorCode.CONFIG, JSON.stringify(creds));
    t.regex(String(x.message), why);
  };
  await config({ token: 'short' }, /at least 16 characters/);
  await config({ curve_secret_key: keyA.secretKey }, /need curve_server_key/);
  await config({ curve_server_key: 'not-a-key' }, /neither a 40-char z85 key nor a readable keys file/);
  await config({ curve_server_key: '@/nonexistent/kvstash.pub' }, /cannot read/);
  await config({ curve_server_key: server.publicKey, curve_secret_key: keyA.secretKey, curve_public_key: keyB.publicKey }, /not the public key of curve_secret_key/);
  await config({ curve_server_key: server.publicKey, curve_public_key: keyA.publicKey }, /needs its curve_secret_key/);

  const formats = await py({ cmd: 'key_formats', n: 1000 });
  t.deepEqual(formats.bad, [], 'keys read back from every key file format (keys may start with "{" or "@")');
  t.is(formats.checked, 1006);

  // The stdlib X25519 the curve method needs: RFC 7748 vectors, libzmq's public keys, and Node's shared secret.
  const x = await py({ cmd: 'x25519', pairs: [{ secret: keyA.secretKey, public: server.publicKey }, { secret: server.secretKey, public: keyB.publicKey }] });
  t.true(x.rfc_one && x.rfc_1000, JSON.stringify(x));
  t.is(x.libzmq_publics, 20);
  t.deepEqual(x.shared, [curveShared(keyA.secretKey, server.publicKey).toString('hex'), curveShared(server.secretKey, keyB.publicKey).toString('hex')]);
});

test('python auth - vLLM and SGLang adapters take credentials from their extra config, else from KVSTASH_* variables', async (t) => {
  t.timeout(60_000);
  const r = await startControl(CURVE_AUTH);
  t.teardown(r.stop);
  const f = keyFiles(t);
  const py = harness(t, { KVSTASH_CURVE_SERVER_KEY: server.publicKey, KVSTASH_CURVE_CLIENT_SECRET_KEY: f.aKeys });
  const v = await py({ cmd: 'open_vllm', name: 'vllm', extra: { endpoint: r.endpoint } });
  t.true(v.ok, JSON.stringify(v));
  t.false(v.settings_repr_has_token as boolean, 'credentials stay out of the settings repr');
  const rv = await py({ cmd: 'roundtrip', name: 'vllm', tenant: 'a', n: 2, seed: 4 });
  t.true(rv.ok && rv.equal, JSON.stringify(rv));
  t.is(bound(r, v.routing_id), `curve:${keyA.publicKey}`, 'vLLM scheduler client: keys from the environment');

  const s = await py({ cmd: 'open_sglang', name: 'sglang', extra: { endpoint: r.endpoint, tenant: 'b', curve_secret_key: keyB.secretKey, token: TOK_B } });
  t.true(s.ok, JSON.stringify(s));
  t.is(s.errors, 0, String(s.last_error));
  t.is(bound(r, s.routing_id), tokenId(TOK_B), 'SGLang backend: extra config wins over the environment');

  // An extra-config key that is present but empty switches its variable off: no client key → a throw-away one, refused.
  const off = await py({ cmd: 'open_sglang', name: 'sglang-off', extra: { endpoint: r.endpoint, timeout_ms: 1000, curve_secret_key: '' } });
  t.is(off.errors, 1, 'the backend counts the refusal as an error and does not raise');
  t.regex(String(off.last_error), /KVS_UNAUTHENTICATED.*throw-away CURVE key/);
  const bad = await py({ cmd: 'open_vllm', name: 'vllm-bad', extra: { endpoint: r.endpoint, token: 'short' } });
  t.is(bad.code, ErrorCode.CONFIG, 'bad credentials fail when the connector reads its settings');
});

test('python auth - after a sidecar restart the client authenticates again (new connection seen, or on KVS_UNAUTHENTICATED) and re-HELLOs', async (t) => {
  t.timeout(60_000);
  const dir = tempDir('kvstash-pyauth-restart-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const endpoint = uniqueIpc(dir);
  const start = () => startControl({ ...CURVE_AUTH, endpoints: [endpoint] });
  let r = await start();
  t.teardown(() => r.stop());
  const py = harness(t);
  await py({ cmd: 'open', name: 'a', endpoint, creds: { curve_server_key: server.publicKey, curve_secret_key: keyA.secretKey } });
  const b = await py({ cmd: 'open', name: 'b', endpoint, creds: { curve_server_key: server.publicKey, curve_secret_key: keyB.secretKey } });
  t.true((await py({ cmd: 'roundtrip', name: 'a', tenant: 'a', n: 2, seed: 5 })).ok);
  t.true((await py({ cmd: 'roundtrip', name: 'b', tenant: 'b', n: 2, seed: 6 })).ok);

  await r.stop();
  r = await start(); // same endpoint and keys, empty tiers, no namespaces, no bindings
  t.true((await py({ cmd: 'await_reconnect', name: 'a' })).ok);
  const ra = await py({ cmd: 'roundtrip', name: 'a', tenant: 'a', n: 3, seed: 7 });
  t.true(ra.ok && ra.equal, JSON.stringify(ra));
  t.is(r.auth!.counters.refused, 0, 'a new connection was seen: AUTH went first, nothing was refused');
  t.is(r.auth!.counters.authOk, 1);

  t.true((await py({ cmd: 'await_reconnect', name: 'b', forget: true })).ok);
  const rb = await py({ cmd: 'roundtrip', name: 'b', tenant: 'b', n: 9, seed: 8, many: true });
  t.true(rb.ok && rb.equal, `KVS_UNAUTHENTICATED → AUTH → KVS_NS_UNKNOWN → HELLO → retry: ${JSON.stringify(rb)}`);
  t.true(r.auth!.counters.refused >= 1, 'the unauthenticated batch was refused first');
  t.is(r.auth!.counters.authOk, 2);
  t.is(bound(r, b.routing_id), `curve:${keyB.publicKey}`);
});
