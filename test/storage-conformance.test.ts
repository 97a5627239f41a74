import test from 'ava';
import { rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { runCase } from '../connector/storage/conformance.js';
import { parseFileConfig } from '../connector/storage/file.js';
import { HalfReadDriver, LaxMemoryDriver, TornWriterDriver } from './helpers/storage-broken-drivers.js';
import { tempDir } from './helpers/sidecar.js';

const brokenModule = fileURLToPath(new URL('./helpers/storage-broken-drivers.ts', import.meta.url));

function torn() {
  const root = tempDir('kvstash-torn-');
  const config = { root, maxValueBytes: 72 * 2 ** 20 };
  const make = () => new TornWriterDriver(parseFileConfig(config));
  return { driver: make(), reopen: make, subprocess: { module: brokenModule, export: 'tornWriterFactory', config }, cleanup: () => rmSync(root, { recursive: true, force: true }) };
}

test('storage-conformance - a driver that writes in place fails crash-mid-put and read-while-write, passes round trips', async (t) => {
  t.is((await runCase('small', torn)).status, 'pass');
  const crash = await runCase('crash-mid-put', torn);
  t.is(crash.status, 'fail', JSON.stringify(crash));
  t.regex(crash.error!, /partial value was visible|list shows/);
  const rw = await runCase('read-while-write', torn);
  t.is(rw.status, 'fail', JSON.stringify(rw));
});

test('storage-conformance - a driver that skips key checks and ignores close fails bad-keys, too-large and closed', async (t) => {
  const lax = () => new LaxMemoryDriver({ maxValueBytes: 2 ** 20 });
  for (const c of ['bad-keys', 'too-large', 'closed']) {
    const r = await runCase(c, lax);
    t.is(r.status, 'fail', `${c}: ${JSON.stringify(r)}`);
  }
  t.is((await runCase('missing', lax)).status, 'pass');
});

test('storage-conformance - a torn read of a big value fails the big round trip; a slow case hits its deadline', async (t) => {
  const r = await runCase('big', () => new HalfReadDriver({ maxValueBytes: 72 * 2 ** 20 }));
  t.is(r.status, 'fail');
  t.regex(r.error!, /got \d+ bytes, expected/);
  const slow = () => {
    const d = new HalfReadDriver();
    d.put = () => new Promise(() => undefined);
    return d;
  };
  const r2 = await runCase('empty', slow, { caseTimeoutMs: 200 });
  t.is(r2.status, 'fail');
  t.regex(r2.error!, /did not finish within 200 ms/);
});

test('storage-conformance - options.skip reports a case as skipped without running it', async (t) => {
  const r = await runCase('big', () => { throw new Error('factory must not be called'); }, { skip: ['big'] });
  t.is(r.status, 'skip');
});
