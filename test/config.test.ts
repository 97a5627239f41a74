import test from 'ava';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { curveKeyPair } from 'zeromq';
import { loadConfig, parseBytes, SETTINGS } from '../connector/config.js';
import { CONTROL_SETTINGS, curveSecretFromConfig } from '../connector/control/settings.js';
import { ErrorCode, KvstashError } from '../protocol/errors.js';
import { tempDir } from './helpers/sidecar.js';

test('config - byte sizes accept units and reject garbage with KVS_CONFIG', (t) => {
  t.is(parseBytes('512MiB'), 512 * 2 ** 20);
  t.is(parseBytes('2g'), 2 * 2 ** 30);
  t.is(parseBytes('1.5 KiB'), 1536);
  t.is(parseBytes(4096), 4096);
  const err = t.throws(() => parseBytes('lots'), { instanceOf: KvstashError });
  t.is(err?.code, ErrorCode.CONFIG);
});

test('config - precedence is flag > environment > file > default', (t) => {
  const f = path.join(tempDir(), 'c.json');
  writeFileSync(f, JSON.stringify({ dramBytes: '1GiB', policy: 'lru', writeConcurrency: 7 }));
  const env = { KVSTASH_DRAM_BYTES: '2GiB', KVSTASH_POLICY: 'heat' };
  const c = loadConfig({ dramBytes: '3GiB' }, env, f);
  t.is(c.dramBytes, 3 * 2 ** 30);
  t.is(c.policy, 'heat');
  t.is(c.writeConcurrency, 7);
  t.is(c.maxKeysPerRequest, 65536);
});

test('config - unknown keys in a file, bad enums and bad booleans are coded errors', (t) => {
  const f = path.join(tempDir(), 'c.json');
  writeFileSync(f, JSON.stringify({ dramByte: '1GiB' }));
  t.is(t.throws(() => loadConfig({}, {}, f))?.message.includes('unknown setting "dramByte"'), true);
  t.is((t.throws(() => loadConfig({ policy: 'fifo' }, {})) as KvstashError).code, ErrorCode.CONFIG);
  t.is((t.throws(() => loadConfig({}, { KVSTASH_FILE_FSYNC: 'maybe' })) as KvstashError).code, ErrorCode.CONFIG);
});

test('config - every setting has a distinct env var and flag, and the defaults resolve', (t) => {
  t.is(new Set(SETTINGS.map((s) => s.env)).size, SETTINGS.length);
  t.is(new Set(SETTINGS.map((s) => s.flag)).size, SETTINGS.length);
  const c = loadConfig({}, {});
  t.true(c.dramBytes > 0);
  t.true(c.endpoints.some((e) => e.startsWith('ipc://')));
  t.true(c.endpoints.includes('tcp://127.0.0.1:5599'));
});

test('config - a z85 CURVE secret key may start with "@" (1 in 85): it is the key, unless a file of that name exists', (t) => {
  let key = curveKeyPair().secretKey;
  key = '@' + key.slice(1); // any 40 z85 characters are a key
  const cfg = (v: string) => loadConfig({ curveSecretKey: v }, {}, undefined, CONTROL_SETTINGS);
  t.is(curveSecretFromConfig(cfg(key)), key, 'found by a CI run: the key was read as a file name');
  const dir = tempDir();
  const file = path.join(dir, 'curve.key');
  const other = curveKeyPair().secretKey;
  writeFileSync(file, other + '\n');
  t.is(curveSecretFromConfig(cfg('@' + file)), other, '@file still reads the file');
  const err = t.throws(() => curveSecretFromConfig(cfg('@' + path.join(dir, 'missing.key'))));
  t.is((err as KvstashError).code, ErrorCode.CONFIG);
});
