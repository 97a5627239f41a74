/**
 * lm:// server memory and time bounds (issue 9 item 1), on real loopback sockets: a global cap on buffered PUT
 * bytes, memory taken as bytes arrive (never at the header), per-request deadlines that trickled bytes do not
 * restart, and memory released when a connection dies.
 */
import test from 'ava';
import net from 'node:net';
import { LmClient } from '../../adapters/lmcache/client.js';
import { encodeClientHeader } from '../../adapters/lmcache/protocol.js';
import { startLmSidecar } from '../fixtures/lmcache/record.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const META = { fmt: 1, dtype: 2, location: 0, shape: [0, 0, 0, 0] as [number, number, number, number] };
const putHeader = (key: string, length: number) => encodeClientHeader('v1', { command: 1, length, key, ...META });

async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(5);
  }
}

function conn(port: number): Promise<{ sock: net.Socket; closed: () => boolean }> {
  return new Promise((resolve, reject) => {
    let closed = false;
    const sock = net.connect({ host: '127.0.0.1', port }, () => resolve({ sock, closed: () => closed }));
    sock.on('close', () => { closed = true; });
    sock.on('error', () => undefined);
    sock.once('error', reject);
  });
}

/** Write and wait until the kernel took it (so the server has it or will read it). */
const send = (s: net.Socket, b: Buffer | string) => new Promise<void>((r) => s.write(b, () => r()));

// Serial: it measures this process's array buffers, which the other (concurrent) tests of this file allocate.
test.serial('lmcache limits - headers claiming huge payloads reserve no memory', async (t) => {
  const r = await startLmSidecar({ settings: { maxBlockBytes: '512MiB' }, lm: { maxBufferedBytes: 64 * 2 ** 20 } });
  t.teardown(() => r.stop());
  const before = process.memoryUsage().arrayBuffers;
  const conns = await Promise.all(Array.from({ length: 20 }, () => conn(r.port())));
  t.teardown(() => { for (const c of conns) c.sock.destroy(); });
  // Fits the cap's arithmetic only for the first few: every one claims 32 MiB and sends 1 KiB.
  for (const [i, c] of conns.entries()) await send(c.sock, Buffer.concat([putHeader(`big-${i}`, 32 * 2 ** 20), Buffer.alloc(1024, 1)]));
  const probe = await LmClient.connect('127.0.0.1', r.port(), 'v1');
  t.teardown(() => probe.close());
  t.true(await probe.health());
  await until(() => r.lm.budget.used === 20 * 1024, 5000, "20 PUT headers and their first KiB");
  const grown = process.memoryUsage().arrayBuffers - before;
  t.true(grown < 64 * 2 ** 20, `array buffers grew by ${grown} bytes for 20 headers of 32 MiB (reserving them would be 640 MiB)`);
});

test('lmcache limits - a global cap on buffered bytes: beyond it new PUTs are refused and counted, the stream stays aligned', async (t) => {
  const cap = 1 << 20;
  const r = await startLmSidecar({ lm: { maxBufferedBytes: cap } });
  t.teardown(() => r.stop());
  const a = await conn(r.port());
  t.teardown(() => a.sock.destroy());
  // A holds 900 KiB of a 1000 KiB PUT.
  await send(a.sock, Buffer.concat([putHeader('a', 1000 * 1024), Buffer.alloc(900 * 1024, 0xaa)]));
  await until(() => r.lm.budget.used === 900 * 1024, 5000, 'A buffered');
  // B's 500 KiB PUT does not fit: refused, skipped; B's next requests are served.
  const b = await LmClient.connect('127.0.0.1', r.port(), 'v1');
  t.teardown(() => b.close());
  b.put('b-big', Buffer.alloc(500 * 1024, 0xbb));
  b.put('b-small', Buffer.from('small'));
  t.is((await b.get('b-small'))?.payload.toString(), 'small');
  t.is(await b.get('b-big'), undefined);
  t.is(r.lm.budget.refusals, 1);
  t.true(r.lm.budget.peak <= cap, `peak ${r.lm.budget.peak}`);
  // A finishes: stored, and its bytes are released.
  await send(a.sock, Buffer.alloc(100 * 1024, 0xaa));
  await until(() => r.lm.counters.stored === 2, 5000, "A's PUT stored");
  t.is(r.lm.budget.used, 0);
  const got = await b.get('a');
  t.is(got?.payload.length, 1000 * 1024);
  t.true(got!.payload.every((x) => x === 0xaa));
});

test('lmcache limits - a PUT that stops fitting while it arrives is refused mid-way and its bytes released', async (t) => {
  const r = await startLmSidecar({ lm: { maxBufferedBytes: 1 << 20 } });
  t.teardown(() => r.stop());
  const a = await conn(r.port());
  const b = await conn(r.port());
  t.teardown(() => { a.sock.destroy(); b.sock.destroy(); });
  await send(a.sock, Buffer.concat([putHeader('a', 800 * 1024), Buffer.alloc(500 * 1024, 1)]));
  await send(b.sock, Buffer.concat([putHeader('b', 400 * 1024), Buffer.alloc(300 * 1024, 2)]));
  await until(() => r.lm.budget.used === 800 * 1024, 5000, 'both partly buffered');
  // A's rest would take the total to 1.1 MiB: refused mid-way, A's bytes released, the rest skipped.
  await send(a.sock, Buffer.alloc(300 * 1024, 1));
  await until(() => r.lm.budget.refusals === 1 && r.lm.budget.used === 300 * 1024, 5000, 'A refused mid-way');
  t.true(r.lm.budget.peak <= 1 << 20, `peak ${r.lm.budget.peak}`);
  // A's stream is still aligned: its next PUT is stored.
  await send(a.sock, Buffer.concat([putHeader('a2', 5), Buffer.from('after')]));
  await send(b.sock, Buffer.alloc(100 * 1024, 2));
  await until(() => r.lm.counters.stored === 2, 5000, 'B and a2 stored');
  t.is(r.lm.budget.used, 0);
  const client = await LmClient.connect('127.0.0.1', r.port(), 'v1');
  t.teardown(() => client.close());
  t.is((await client.get('a2'))?.payload.toString(), 'after');
  t.is(await client.get('a'), undefined);
  t.is((await client.get('b'))?.payload.length, 400 * 1024);
});

test('lmcache limits - memory held by a partial PUT is released when its connection dies', async (t) => {
  const r = await startLmSidecar({ lm: { maxBufferedBytes: 8 << 20 } });
  t.teardown(() => r.stop());
  const conns = await Promise.all(Array.from({ length: 4 }, () => conn(r.port())));
  for (const [i, c] of conns.entries()) await send(c.sock, Buffer.concat([putHeader(`p${i}`, 4 << 20), Buffer.alloc(1 << 20, i)]));
  await until(() => r.lm.budget.used === 4 << 20, 5000, '4 MiB buffered');
  for (const c of conns) c.sock.destroy();
  await until(() => r.lm.budget.used === 0, 5000, 'the buffered bytes released');
  t.is(r.lm.counters.stored, 0);
});

test('lmcache limits - a header trickled one byte at a time is closed at its deadline, not restarted per byte', async (t) => {
  const r = await startLmSidecar({ lm: { stallMs: 300 } });
  t.teardown(() => r.stop());
  const c = await conn(r.port());
  t.teardown(() => c.sock.destroy());
  const h = putHeader('trickle', 4);
  const t0 = Date.now();
  for (let i = 0; i < h.length - 1 && !c.closed(); i++) {
    c.sock.write(h.subarray(i, i + 1));
    await sleep(20); // 185 bytes × 20 ms ≈ 3.7 s if never closed
  }
  await until(c.closed, 10_000, 'the connection closed');
  t.true(Date.now() - t0 < 3000, `closed after ${Date.now() - t0} ms`);
  t.is(r.lm.counters.timeouts, 1);
});

test('lmcache limits - a payload trickled one byte at a time is closed at the request deadline and its bytes released', async (t) => {
  const r = await startLmSidecar({ lm: { requestMs: 400 } });
  t.teardown(() => r.stop());
  const c = await conn(r.port());
  t.teardown(() => c.sock.destroy());
  await send(c.sock, Buffer.concat([putHeader('slow', 10_000), Buffer.alloc(1000, 1)]));
  const t0 = Date.now();
  for (let i = 0; i < 200 && !c.closed(); i++) {
    c.sock.write(Buffer.alloc(1, 1));
    await sleep(20);
  }
  await until(c.closed, 10_000, 'the connection closed');
  t.true(Date.now() - t0 < 3500, `closed after ${Date.now() - t0} ms`);
  t.is(r.lm.counters.timeouts, 1);
  await until(() => r.lm.budget.used === 0, 5000, 'bytes released');
  const client = await LmClient.connect('127.0.0.1', r.port(), 'v1');
  t.teardown(() => client.close());
  t.is(await client.get('slow'), undefined);
});
