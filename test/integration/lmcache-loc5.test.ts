/**
 * LMCache @ 0851d06c (lmcache/v1/protocol.py): its ServerMetaMessage.deserialize reads `code, length, fmt, dtype,
 * location, shape×4` although every v1 server writes location last. A port configured `/v1-loc5` answers in the
 * order that client reads; objects are shared with `v1` clients (same request format).
 */
import test from 'ava';
import { LmClient } from '../../adapters/lmcache/client.js';
import { decodeReplyHeader, encodeReplyHeader, type Shape } from '../../adapters/lmcache/protocol.js';
import { parseListenSpec } from '../../adapters/lmcache/server.js';
import { startLmSidecar } from '../fixtures/lmcache/record.js';

/** What 0851d06c's ServerMetaMessage.deserialize does: struct.unpack("iiiiiiiii") → code, length, fmt, dtype, location, s0..s3. */
function read0851d06(b: Buffer): { code: number; length: number; fmt: number; dtype: number; location: number; shape: number[] } {
  const i = (n: number) => b.readInt32LE(n * 4);
  return { code: i(0), length: i(1), fmt: i(2), dtype: i(3), location: i(4), shape: [i(5), i(6), i(7), i(8)] };
}

test('lmcache-loc5 - reply order: location 5th as 0851d06c reads it, last otherwise', (t) => {
  const r = { code: 200, length: 4096, fmt: 1, dtype: 3, location: 2, shape: [2, 4, 256, 64] as Shape };
  const loc5 = encodeReplyHeader('v1', r, undefined, 0, 'location-fifth');
  t.deepEqual(read0851d06(loc5), { ...r, shape: [...r.shape] });
  t.deepEqual(decodeReplyHeader('v1', loc5, 'location-fifth'), r);
  const last = encodeReplyHeader('v1', r);
  t.notDeepEqual(read0851d06(last).shape, r.shape, 'the v1 order is what that client misreads');
  t.is(parseListenSpec('127.0.0.1:6000/v1-loc5').generation, 'v1-loc5');
  t.throws(() => parseListenSpec('127.0.0.1:6000/v1-loc6'), { code: 'KVS_CONFIG' });
});

test('lmcache-loc5 - a /v1-loc5 port serves 0851d06c clients objects stored by v1 clients, and the other way round', async (t) => {
  const s = await startLmSidecar({ listen: [{ generation: 'v1' }, { generation: 'v1-loc5' as never }] });
  t.teardown(() => s.stop());
  const v1 = await LmClient.connect('127.0.0.1', s.port(0), 'v1');
  const old = await LmClient.connect('127.0.0.1', s.port(1), 'v1', { replyOrder: 'location-fifth' });
  t.teardown(() => { v1.close(); old.close(); });
  const meta = { fmt: 1, dtype: 3, location: 1, shape: [2, 4, 16, 8] as Shape };
  const payload = Buffer.alloc(2 * 4 * 16 * 8 * 2, 7);
  v1.put('a@m@1@0@00ff@bfloat16', payload, meta);
  old.put('b@m@1@0@01ff@bfloat16', payload, meta);
  for (const c of [v1, old]) {
    for (const k of ['a@m@1@0@00ff@bfloat16', 'b@m@1@0@01ff@bfloat16']) {
      const g = await c.get(k);
      t.deepEqual(g && { ...g.header, n: g.payload.length }, { code: 200, length: payload.length, ...meta, n: payload.length });
    }
  }
  t.is((await old.get('missing@m@1@0@02ff@bfloat16')), undefined);
});
