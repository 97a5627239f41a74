import test from 'ava';
import { existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { checksum } from '../connector/checksum.js';
import { driverConformance } from '../connector/storage/conformance.js';
import { FileDriver, fileDriverFactory, parseFileConfig } from '../connector/storage/file.js';
import { tempDir } from './helpers/sidecar.js';

const fileModule = fileURLToPath(new URL('../connector/storage/file.ts', import.meta.url));

driverConformance(test, () => {
  const root = tempDir('kvstash-file-conf-');
  const config = { root, maxValueBytes: 72 * 2 ** 20 };
  const make = () => new FileDriver(parseFileConfig(config));
  return {
    driver: make(), reopen: make, cleanup: () => rmSync(root, { recursive: true, force: true }),
    subprocess: { module: fileModule, export: 'fileDriverFactory', config },
  };
}, { prefix: 'storage-file' });

const key = `${'c'.repeat(32)}/${'d'.repeat(64)}`;

test('storage-file - open removes temp files of a killed writer; published values stay', async (t) => {
  const root = tempDir();
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const d = new FileDriver(parseFileConfig({ root }));
  await d.open();
  const v = Buffer.from('published');
  await d.put(key, v, { checksum: checksum(v) });
  writeFileSync(path.join(root, 'tmp', '999-x-0.tmp'), 'half a value');
  const d2 = new FileDriver(parseFileConfig({ root }));
  await d2.open();
  t.deepEqual(readdirSync(path.join(root, 'tmp')), []);
  t.deepEqual((await d2.get(key))?.value, v);
});

test('storage-file - a damaged header reads as a checksum failure, and quarantine moves the file aside', async (t) => {
  const root = tempDir();
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const d = new FileDriver(parseFileConfig({ root }));
  await d.open();
  const file = path.join(root, 'v1', key.slice(0, 32), 'dd', `${'d'.repeat(64)}.kvb`);
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, Buffer.from('not a kvstash block file at all, but long enough'));
  const got = await d.get(key);
  t.is(got?.meta.checksum, 'ffffffffffffffff');
  t.is(d.stats().torn, 1);
  await d.quarantine(key);
  t.false(existsSync(file));
  t.is(readdirSync(path.join(root, 'quarantine')).length, 1);
  t.is(await d.get(key), undefined);
});

test('storage-file - config parser names the offending field', (t) => {
  t.regex(t.throws(() => fileDriverFactory.parseConfig({}))!.message, /root/);
  t.regex(t.throws(() => fileDriverFactory.parseConfig({ root: '/x', fsync: 'yes' }))!.message, /fsync/);
});
