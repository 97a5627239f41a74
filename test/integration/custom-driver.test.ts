import test from 'ava';
import { spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import path from 'node:path';
import { driverConformance } from '../../connector/storage/sdk.js';
import factory from '../../examples/custom-driver/segment-driver.js';
import { repoRoot, tempDir } from '../helpers/sidecar.js';

const moduleFile = path.join(repoRoot, 'examples', 'custom-driver', 'segment-driver.ts');

driverConformance(test, () => {
  const dir = tempDir('kvstash-segment-');
  const config = { dir, maxValueBytes: 72 * 2 ** 20 };
  const make = () => factory.create(factory.parseConfig(config));
  return { driver: make(), reopen: make, subprocess: { module: moduleFile, config }, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}, { prefix: 'custom-driver' });

test('custom-driver - `kvstash driver-test` passes the example driver and prints the table', (t) => {
  const dir = tempDir('kvstash-segment-cli-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'cli', 'kvstash.ts'), 'driver-test', moduleFile,
    '--config', JSON.stringify({ dir, maxValueBytes: 72 * 2 ** 20 }), '--big-value-bytes', String(16 * 2 ** 20)], { cwd: repoRoot, encoding: 'utf8', timeout: 100_000 });
  t.is(r.status, 0, r.stdout + r.stderr);
  t.regex(r.stdout, /crash-mid-put\s+PASS/);
  // The example driver has no readInto (an optional method): that case is skipped, saying why.
  t.regex(r.stdout, /read-into\s+skip\s+\d+\s+this driver has no readInto \(an optional method\)/);
  t.regex(r.stdout, /(\d+) passed, 0 failed, 1 skipped/);
});

test('custom-driver - `kvstash driver-test` fails (exit 1) on a driver that breaks the contract, and 2 on bad config', (t) => {
  const dir = tempDir('kvstash-segment-cli-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const broken = path.join(repoRoot, 'test', 'helpers', 'storage-broken-drivers.ts');
  const cli = (args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'cli', 'kvstash.ts'), 'driver-test', ...args], { cwd: repoRoot, encoding: 'utf8', timeout: 100_000 });
  const r = cli([broken, '--export', 'tornWriterFactory', '--config', JSON.stringify({ root: dir }), '--only', 'small,read-while-write,crash-mid-put']);
  t.is(r.status, 1, r.stdout + r.stderr);
  t.regex(r.stdout, /small\s+PASS/);
  t.regex(r.stdout, /crash-mid-put\s+FAIL/);
  const bad = cli([moduleFile, '--config', '{"dir": 5}']);
  t.is(bad.status, 2);
  t.regex(bad.stderr, /KVS_CONFIG.*dir/);
});
