/**
 * Quick start for the Node client: store the KV blocks of a prompt, then find and read them back.
 *   kvstash serve &                                  # or: npm start
 *   npx tsx examples/node-client/quickstart.ts [endpoint]
 */
import { KvstashClient } from '../../connector/client.js';
import { blockHashes } from '../../connector/keys.js';
import { defaultEndpoints } from '../../connector/config.js';

const endpoint = process.argv[2] ?? defaultEndpoints()[0]!;
const client = new KvstashClient(endpoint, { timeoutMs: 3000 });
try {
  // 1. The namespace fixes everything that makes KV bytes incompatible.
  const ns = await client.hello({
    model: 'meta-llama/Llama-3.1-8B-Instruct', engine: 'example', layout: 'bf16;bs=16;L=32;H=8;D=128;NHD',
    tp_rank: 0, tp_size: 1, pp_rank: 0, pp_size: 1, tenant: 'default',
  });
  // 2. Keys: the canonical chained hash of every full 16-token block of the prompt.
  const prompt = Array.from({ length: 100 }, (_, i) => 1000 + i);
  const keys = blockHashes(prompt, 16);
  // 3. Store one (fake) KV block per key: 16 tokens × 32 layers × 8 heads × 128 dims × 2 (K, V) × 2 bytes = 2 MiB.
  const blocks = keys.map((_, i) => Buffer.alloc(2 << 20, i));
  const results = await client.put(ns, keys, blocks);
  // 4. A later request with the same prefix asks how much is cached, then loads it.
  const hit = await client.lookup(ns, blockHashes([...prompt, 7, 8, 9], 16));
  const got = await client.get(ns, keys.slice(0, hit.hit));
  const ok = got.every((g, i) => g?.equals(blocks[i]!));
  console.log(JSON.stringify({ endpoint, namespace: ns, stored: results, hit_blocks: hit.hit, tiers: hit.tiers, verified: ok }));
} finally {
  client.close();
}
