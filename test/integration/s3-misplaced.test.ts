/**
 * Issue 9 item 2 on S3 (a REAL s3rver process): an object copied to another key's name keeps its `kvs-key`
 * metadata, so it is a miss there (counted `misplaced`), for get and for stat (the shared-tier probe), and after a
 * restart the rebuilt index leaves it out.
 */
import test from 'ava';
import { CopyObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { randomBytes } from 'node:crypto';
import { checksum } from '../../connector/checksum.js';
import { S3Driver } from '../../connector/storage/s3.js';
import { parseS3Config } from '../../connector/storage/s3-config.js';
import { startS3rver, type S3rverProcess } from '../helpers/s3rver.js';

let s3: S3rverProcess;
test.before(async () => { s3 = await startS3rver(); });
test.after.always(async () => { await s3?.stop(); });

const key = (ns: string) => `${ns}/${randomBytes(32).toString('hex')}`;

test('s3-misplaced - an object copied to another key\'s name is a miss there, for get, stat and list', async (t) => {
  const config = { ...s3.config, prefix: 'mis/' };
  const d = new S3Driver(parseS3Config(config));
  await d.open();
  t.teardown(() => d.close());
  const ns = randomBytes(16).toString('hex');
  const a = key(ns);
  const b = key(ns);
  const v = randomBytes(100_000);
  await d.put(a, v, { checksum: checksum(v) });
  const raw = new S3Client({ region: 'us-east-1', endpoint: s3.endpoint, forcePathStyle: true, credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } });
  t.teardown(() => raw.destroy());
  await raw.send(new CopyObjectCommand({ Bucket: s3.bucket, Key: `mis/v1/${b}`, CopySource: `${s3.bucket}/mis/v1/${a}` }));

  const d2 = new S3Driver(parseS3Config(config));
  await d2.open();
  t.teardown(() => d2.close());
  t.is(await d2.get(b), undefined);
  t.is(await d2.stat(b), undefined);
  t.false(await d2.has(b));
  t.true((await d2.get(a))!.value.equals(v));
  const listed: string[] = [];
  for await (const it of d2.list()) if (it.key.startsWith(ns)) listed.push(it.key);
  t.deepEqual(listed, [a]);
  t.true(d2.stats().misplaced! >= 3, JSON.stringify(d2.stats()));
});
