/**
 * Regenerates protocol/golden/v1.json: encoded example messages of wire protocol v1, one per op and error.
 * Run: npx tsx scripts/gen-golden.ts. Tests (test/codec.test.ts) check that decoding each example gives its
 * `header` and that encoding the header gives exactly its bytes; the Python client tests use them too.
 * In the JSON, binary header fields are written as {"bin_hex": "..."}.
 */
import { writeFileSync } from 'node:fs';
import { encodeError, encodeReply, encodeRequest } from '../protocol/codec.js';
import { namespaceId } from '../connector/keys.js';

const desc = { model: 'meta-llama/Llama-3.1-8B-Instruct', engine: 'vllm', layout: 'bf16;bs=16;L=32;H=8;D=128;NHD', tp_rank: 0, tp_size: 1, pp_rank: 0, pp_size: 1, tenant: 'default' };
const ns = namespaceId(desc);
const k1 = Buffer.alloc(32, 0x11);
const k2 = Buffer.alloc(32, 0x22);
const keys = Buffer.concat([k1, k2]);
const blk = (n: number, fill: number) => Buffer.alloc(n, fill);

const examples: { name: string; kind: 'request' | 'reply'; header: Record<string, unknown>; blocks: Buffer[] }[] = [
  { name: 'hello', kind: 'request', header: { id: 1, op: 'HELLO', client: 'kvstash-python/0.1', namespace: desc }, blocks: [] },
  { name: 'hello-reply', kind: 'reply', header: { id: 1, ns, server: 'kvstash/0.1.0', protocol: 1, tiers: ['dram', 'file'], limits: { max_message_bytes: 1073741824, max_block_bytes: 536870912, max_inflight_bytes: 2147483648 } }, blocks: [] },
  { name: 'lookup', kind: 'request', header: { id: 2, op: 'LOOKUP', ns, keys, prefetch: true }, blocks: [] },
  { name: 'lookup-reply', kind: 'reply', header: { id: 2, hit: 2, tiers: { dram: 1, file: 1 }, load_ms: { dram: 0.5, file: 2.25 } }, blocks: [] },
  { name: 'put', kind: 'request', header: { id: 3, op: 'PUT', ns, keys, sizes: [4, 3], sums: ['0123456789abcdef', 'fedcba9876543210'] }, blocks: [blk(4, 0xaa), blk(3, 0xbb)] },
  { name: 'put-reply', kind: 'reply', header: { id: 3, results: [0, 1] }, blocks: [] },
  { name: 'get', kind: 'request', header: { id: 4, op: 'GET', ns, keys }, blocks: [] },
  { name: 'get-reply', kind: 'reply', header: { id: 4, sizes: [4, -1] }, blocks: [blk(4, 0xaa)] },
  { name: 'exists', kind: 'request', header: { id: 5, op: 'EXISTS', ns, keys }, blocks: [] },
  { name: 'exists-reply', kind: 'reply', header: { id: 5, exists: [true, false], prefix: 1 }, blocks: [] },
  { name: 'delete', kind: 'request', header: { id: 6, op: 'DELETE', ns, keys: k1 }, blocks: [] },
  { name: 'delete-reply', kind: 'reply', header: { id: 6, deleted: 1 }, blocks: [] },
  { name: 'stats', kind: 'request', header: { id: 7, op: 'STATS' }, blocks: [] },
  { name: 'ping', kind: 'request', header: { id: 8, op: 'PING' }, blocks: [] },
  { name: 'ping-reply', kind: 'reply', header: { id: 8, server: 'kvstash/0.1.0' }, blocks: [] },
  { name: 'error-reply', kind: 'reply', header: { id: 9, code: 'KVS_KEY_LENGTH', message: '"keys" is 31 bytes, not a multiple of 32' }, blocks: [] },
];

const toJson = (v: unknown): unknown => {
  if (Buffer.isBuffer(v)) return { bin_hex: v.toString('hex') };
  if (Array.isArray(v)) return v.map(toJson);
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, toJson(x)]));
  return v;
};

const out = examples.map((e) => {
  let frames: Buffer[];
  if (e.name === 'error-reply') frames = encodeError(9, e.header.code as string, e.header.message as string);
  else frames = e.kind === 'request' ? encodeRequest(e.header, e.blocks) : encodeReply(e.header as { id: number }, e.blocks);
  const full = e.kind === 'request' ? { v: 1, ...e.header } : e.name === 'error-reply' ? { v: 1, id: 9, status: 'ERR', ...e.header } : { v: 1, status: 'OK', ...e.header };
  return { name: e.name, kind: e.kind, header: toJson(full), frames: frames.map((f) => f.toString('hex')) };
});
writeFileSync(new URL('../protocol/golden/v1.json', import.meta.url), JSON.stringify({ protocol: 1, note: 'frames[0] is the msgpack header, frames[1..] raw block bytes; no identity frame', examples: out }, null, 1) + '\n');
console.log(`wrote ${out.length} examples`);
