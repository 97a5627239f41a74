/**
 * RESP front with real clients against `kvstash serve --resp` (a child process): LMCache's redis:// connector
 * driven with Debian's redis-py (test/integration/py/lmcache_redis_client.py), values surviving a restart through
 * the file tier; redis-cli (commands, databases, errors); redis-benchmark; AUTH mapped to tokens and tenants;
 * bad input over raw sockets (huge declared length, stalled request, the global buffered-bytes cap).
 */
import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { rmSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import { killAndWait, repoRoot, spawnSidecar, tempDir, uniqueIpc, type SpawnedSidecar } from '../helpers/sidecar.js';

const run = promisify(execFile);
const python = process.env.KVSTASH_PYTHON || '/usr/bin/python3';
const OPS_TOKEN = 'ops-token-0123456789abcdef';
const ACME_TOKEN = 'acme-token-0123456789abcdef';

async function serve(t: ExecutionContext, args: string[] = [], dir = tempDir()): Promise<{ port: number; sc: SpawnedSidecar; dir: string }> {
  const sc = await spawnSidecar(['--endpoints', uniqueIpc(dir), '--file-root', path.join(dir, 'tier'), '--dram-bytes', '64MiB', '--resp', '127.0.0.1:0', ...args], {}, 90_000);
  t.teardown(() => killAndWait(sc.proc));
  const m = await sc.waitFor(/resp \(Redis protocol\) server listening on redis:\/\/127\.0\.0\.1:(\d+)/);
  return { port: Number(m[1]), sc, dir };
}

async function cli(port: number, ...args: string[]): Promise<string> {
  const { stdout } = await run('redis-cli', ['-p', String(port), ...args], { timeout: 20_000 });
  return stdout.trim();
}

async function lmcache(url: string, mode: string, n: number, size: number): Promise<Record<string, unknown>> {
  const { stdout } = await run(python, [path.join(repoRoot, 'test/integration/py/lmcache_redis_client.py'), url, mode, String(n), String(size)], { timeout: 60_000 });
  return JSON.parse(stdout.trim().split('\n').pop()!) as Record<string, unknown>;
}

test.serial('resp - LMCache redis:// connector (redis-py asyncio) stores, finds and reads chunks; they survive a restart through the file tier', async (t) => {
  const dir = tempDir();
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const a = await serve(t, [], dir);
  const first = await lmcache(`redis://127.0.0.1:${a.port}`, 'put', 8, 256 * 1024);
  t.like(first, { put: 8, contains: 8, good: 8, del_kv: 1, del_meta: 1, exists_after: 0, dbsize: 14, redis_version: '7.0.0' });
  // The values are tier blocks: stop (writes drain to the file tier), start again on the same folder.
  await killAndWait(a.sc.proc, 'SIGTERM');
  const b = await serve(t, [], dir);
  const again = await lmcache(`redis://127.0.0.1:${b.port}`, 'check', 8, 256 * 1024);
  t.like(again, { contains: 7, good: 7, dbsize: 14 });
  const keys = (await cli(b.port, 'keys', '*metadata')).split('\n');
  t.is(keys.length, 7);
});

test.serial('resp - redis-cli: strings, databases, scans, TTL commands, introspection and errors', async (t) => {
  const { port } = await serve(t);
  t.is(await cli(port, 'ping'), 'PONG');
  t.is(await cli(port, 'set', 'greeting', 'hello'), 'OK');
  t.is(await cli(port, 'get', 'greeting'), 'hello');
  t.is(await cli(port, 'strlen', 'greeting'), '5');
  t.is(await cli(port, 'mset', 'user:1', 'a', 'user:2', 'b', 'other', 'c'), 'OK');
  t.is(await cli(port, 'mget', 'user:1', 'nope', 'user:2'), 'a\n\nb');
  t.is(await cli(port, 'exists', 'user:1', 'user:2', 'nope'), '2');
  t.is(await cli(port, 'set', 'greeting', 'x', 'NX'), '');
  t.is(await cli(port, 'set', 'fresh', 'y', 'XX'), '');
  t.is(await cli(port, 'set', 'greeting', 'hi', 'EX', '100', 'GET'), 'hello');
  t.is(await cli(port, 'get', 'greeting'), 'hi');
  t.deepEqual((await cli(port, 'keys', 'user:*')).split('\n').sort(), ['user:1', 'user:2']);
  t.is(await cli(port, '--scan', '--pattern', 'oth*'), 'other');
  t.is(await cli(port, 'dbsize'), '4');
  t.is(await cli(port, 'expire', 'other', '10'), '1');
  t.is(await cli(port, 'ttl', 'other'), '-1');
  t.is(await cli(port, 'ttl', 'nope'), '-2');
  t.is(await cli(port, 'type', 'other'), 'string');
  // Databases are separate namespaces.
  t.is(await cli(port, '-n', '3', 'get', 'greeting'), '');
  t.is(await cli(port, '-n', '3', 'set', 'greeting', 'db3'), 'OK');
  t.is(await cli(port, 'get', 'greeting'), 'hi');
  t.regex(await cli(port, 'info', 'keyspace'), /db0:keys=4,expires=0,avg_ttl=0[\s\S]*db3:keys=1/);
  t.regex(await cli(port, 'info'), /redis_version:7\.0\.0/);
  t.true(Number(await cli(port, 'command', 'count')) > 20);
  t.is(await cli(port, 'del', 'user:1', 'nope'), '1');
  t.is(await cli(port, 'unlink', 'user:2'), '1');
  t.is(await cli(port, 'exists', 'user:1', 'user:2'), '0');
  t.regex(await cli(port, 'lpush', 'list', 'x'), /ERR unknown command 'lpush', with args beginning with: 'list' 'x'/);
  t.regex(await cli(port, 'get'), /ERR wrong number of arguments for 'get' command/);
  t.regex(await cli(port, 'select', '99'), /ERR DB index is out of range/);
  t.is(await cli(port, 'flushdb'), 'OK');
  t.is(await cli(port, 'dbsize'), '0');
  t.is(await cli(port, '-n', '3', 'dbsize'), '1');
});

test.serial('resp - redis-benchmark runs its SET/GET/MSET suite with pipelining, and the values are there', async (t) => {
  const { port } = await serve(t);
  const { stdout } = await run('redis-benchmark', ['-p', String(port), '-t', 'set,get,mset', '-n', '2000', '-P', '16', '-c', '8', '-d', '4096', '--csv'], { timeout: 120_000 });
  for (const name of ['SET', 'GET', 'MSET (10 keys)']) t.regex(stdout, new RegExp(`"${name.replace(/[()]/g, '\\$&')}","[1-9]`));
  t.is(await cli(port, 'strlen', 'key:__rand_int__'), '4096');
});

test.serial('resp - AUTH maps to kvstash tokens and tenants; FLUSHDB needs control-plane rights', async (t) => {
  const tokens = JSON.stringify({ [OPS_TOKEN]: '*', [ACME_TOKEN]: ['acme'] });
  const { port } = await serve(t, ['--auth-tokens', tokens]);
  t.regex(await cli(port, 'get', 'k'), /NOAUTH Authentication required/);
  t.regex(await cli(port, 'auth', 'wrong-token-000000000000'), /WRONGPASS/);
  // A token may only name its tenants.
  t.regex(await cli(port, 'auth', 'globex', ACME_TOKEN), /WRONGPASS/);
  t.is(await cli(port, 'auth', 'acme', ACME_TOKEN), 'OK');
  const acme = ['--no-auth-warning', '--user', 'acme', '--pass', ACME_TOKEN];
  t.is(await cli(port, ...acme, 'set', 'k', 'acme-value'), 'OK');
  t.is(await cli(port, ...acme, 'get', 'k'), 'acme-value');
  // The same key in another tenant is another namespace.
  const ops = ['--no-auth-warning', '--user', 'globex', '--pass', OPS_TOKEN];
  t.is(await cli(port, ...ops, 'get', 'k'), '');
  t.regex(await cli(port, ...acme, 'flushdb'), /NOPERM/);
  t.is(await cli(port, '--no-auth-warning', '--user', 'acme', '--pass', OPS_TOKEN, 'flushdb'), 'OK');
  t.is(await cli(port, ...acme, 'get', 'k'), '');
  // HELLO 3 with AUTH, as RESP3 clients authenticate.
  const { stdout } = await run(python, ['-c', `
import redis
r = redis.Redis(port=${port}, username='acme', password='${ACME_TOKEN}', db=2, client_name='py')
r.set('a', b'\\x00\\xff')
print(r.get('a') == b'\\x00\\xff', r.client_getname(), r.dbsize())
`], { timeout: 20_000 });
  t.is(stdout.trim(), 'True py 1');
});

function rawConn(port: number): Promise<{ sock: net.Socket; data: () => string; closed: Promise<void> }> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1', () => resolve({ sock, data: () => out, closed }));
    let out = '';
    sock.on('data', (d) => { out += d.toString('latin1'); });
    sock.on('error', () => undefined);
    const closed = new Promise<void>((r) => sock.on('close', () => r()));
    sock.once('error', reject);
  });
}

const within = <T>(p: Promise<T>, ms: number, what: string) =>
  Promise.race([p, new Promise<never>((_, rej) => setTimeout(() => rej(new Error(`${what}: not within ${ms} ms`)), ms).unref())]);

test.serial('resp - bad input: huge declared length, truncated request from a stalled sender, and the global buffered-bytes cap', async (t) => {
  const { port } = await serve(t, ['--resp-max-buffered-bytes', '1MiB', '--resp-stall-ms', '500']);
  // A declared bulk over maxBlockBytes (512 MiB): error and close, nothing allocated.
  const huge = await rawConn(port);
  huge.sock.write('*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$9999999999\r\n');
  await within(huge.closed, 10_000, 'huge declared length');
  t.regex(huge.data(), /^-ERR Protocol error: invalid bulk length/);
  // A truncated multibulk whose sender stalls: closed after the stall time.
  const slow = await rawConn(port);
  slow.sock.write('*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$10\r\nabc');
  await within(slow.closed, 10_000, 'stalled sender');
  t.is(slow.data(), '');
  // The cap is global: two connections each declaring 700 KiB; the second passes 1 MiB and is refused.
  const a = await rawConn(port);
  a.sock.write('*3\r\n$3\r\nSET\r\n$1\r\na\r\n$716800\r\n' + 'x'.repeat(1000));
  await new Promise((r) => setTimeout(r, 100));
  const b = await rawConn(port);
  b.sock.write('*3\r\n$3\r\nSET\r\n$1\r\nb\r\n$716800\r\n' + 'y'.repeat(1000));
  await within(b.closed, 10_000, 'second connection over the cap');
  t.regex(b.data(), /^-ERR Protocol error: buffered request bytes over the global cap/);
  // The first one completes normally; and others are unaffected.
  a.sock.write('x'.repeat(716800 - 1000) + '\r\n*2\r\n$6\r\nSTRLEN\r\n$1\r\na\r\n');
  await within((async () => { while (!a.data().includes(':716800')) await new Promise((r) => setTimeout(r, 20)); })(), 10_000, 'first connection reply');
  t.is(a.data(), '+OK\r\n:716800\r\n');
  a.sock.destroy();
  t.is(await cli(port, 'strlen', 'a'), '716800');
  t.regex(await cli(port, 'info', 'clients'), /query_buffered_bytes:0/);
});

test.serial('resp - one pipelined batch that sets, gets and deletes one key answers each GET with the value of its moment', async (t) => {
  const { port } = await serve(t);
  const cmd = (...a: string[]) => `*${a.length}\r\n` + a.map((x) => `$${Buffer.byteLength(x, 'latin1')}\r\n${x}\r\n`).join('');
  const bulk = (v: string) => `$${v.length}\r\n${v}\r\n`;
  for (const size of [4096, 300, 256 * 1024]) {
    const [a, b, c] = ['a', 'b', 'c'].map((ch) => ch.repeat(size - 1) + String(size % 10)) as [string, string, string];
    const conn = await rawConn(port);
    const batch = cmd('SET', 'k', a) + cmd('GET', 'k') + cmd('GET', 'k') + cmd('SET', 'k', b) + cmd('GET', 'k') + cmd('SET', 'k2', c) + cmd('GET', 'k')
      + cmd('GET', 'k2') + cmd('DEL', 'k') + cmd('GET', 'k') + cmd('GET', 'k2') + cmd('SET', 'k', c) + cmd('GET', 'k');
    conn.sock.write(batch);
    const want = '+OK\r\n' + bulk(a) + bulk(a) + '+OK\r\n' + bulk(b) + '+OK\r\n' + bulk(b) + bulk(c) + ':1\r\n' + '$-1\r\n' + bulk(c) + '+OK\r\n' + bulk(c);
    await within((async () => { while (conn.data().length < want.length) await new Promise((r) => setTimeout(r, 20)); })(), 20_000, `replies for ${size}-byte values`);
    t.true(conn.data() === want, `replies for ${size}-byte values`);
    // The next batch (a later task) still reads the stored values.
    conn.sock.write(cmd('GET', 'k') + cmd('GET', 'k2'));
    const later = want + bulk(c) + bulk(c);
    await within((async () => { while (conn.data().length < later.length) await new Promise((r) => setTimeout(r, 20)); })(), 20_000, 'later batch');
    t.true(conn.data() === later);
    conn.sock.destroy();
  }
});
