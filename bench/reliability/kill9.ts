/**
 * kill -9 loops under mixed load. Each round: a fresh `kvstash serve` over the same file tier; first every block
 * made durable in earlier rounds is read back (missing = acknowledged data lost, different = wrong bytes), then
 * a batch is written and made durable (the file tier's write-behind queue seen empty), then a storm of PUTs and
 * verified GETs runs on 4 clients and the sidecar is SIGKILLed in the middle of it. Blocks of the storm may be
 * lost (a cache acknowledges DRAM), but any that is served must be exact.
 */
import { KvstashClient } from '../../connector/client.js';
import { blockFor, keyOf, NS, rng, serve, tempDir, until, verdict, wrongBytes, type Row } from './common.js';

const SIZE = 64 * 1024;

export async function kill9(rounds: number, seed: number): Promise<Row> {
  const dir = tempDir('kill9');
  const args = ['--file-root', `${dir}/tier`, '--dram-bytes', '32MiB', '--file-bytes', '2GiB'];
  const durable: Buffer[] = [];
  const storm: Buffer[] = [];
  let wrong = 0;
  let lost = 0;
  let peak = 0;
  let written = 0;
  let stormServed = 0;
  const r = rng(seed);
  for (let round = 0; round <= rounds; round++) {
    const s = await serve(dir, args);
    const c = new KvstashClient(s.endpoint, { timeoutMs: 30_000 });
    try {
      const ns = await c.hello(NS);
      // 1. What earlier rounds made durable must be there, exactly; storm blocks may be gone but never wrong.
      for (let i = 0; i < durable.length; i += 32) {
        const ks = durable.slice(i, i + 32);
        const got = await c.get(ns, ks);
        ks.forEach((k, j) => { if (!got[j]) lost++; else wrong += wrongBytes(got[j]!, blockFor(k, SIZE)); });
      }
      for (let i = 0; i < storm.length; i += 32) {
        const ks = storm.slice(i, i + 32);
        const got = await c.get(ns, ks);
        ks.forEach((k, j) => { if (got[j]) { stormServed++; wrong += wrongBytes(got[j]!, blockFor(k, SIZE)); } });
      }
      if (round === rounds) { peak = Math.max(peak, s.peakMiB()); await s.stop(); break; }
      // 2. A batch made durable: acknowledged, then the file tier's queue seen empty.
      const batch = Array.from({ length: 160 }, (_, i) => keyOf(`kill9-${seed}-d${round}`, i));
      for (let i = 0; i < batch.length; i += 16) {
        const ks = batch.slice(i, i + 16);
        const res = await c.put(ns, ks, ks.map((k) => blockFor(k, SIZE)));
        written += ks.length;
        if (res.some((x) => x !== 0 && x !== 1)) throw new Error(`durable batch refused: ${res}`);
      }
      await until(async () => {
        const st = (await c.stats()) as { tiers: { name: string; queueDepth: number }[] };
        return st.tiers.every((t) => t.queueDepth === 0);
      }, 120_000, 'empty write-behind queue');
      durable.push(...batch);
      // 3. The storm: 4 clients PUT new blocks and GET durable ones; SIGKILL once enough were acknowledged.
      let acked = 0;
      let stop = false;
      const killAt = 80 + Math.floor(r() * 160);
      const clients = Array.from({ length: 4 }, () => new KvstashClient(s.endpoint, { timeoutMs: 30_000 }));
      const loops = clients.map(async (cl, w) => {
        const nsw = await cl.hello(NS);
        for (let i = 0; !stop; i++) {
          const ks = Array.from({ length: 8 }, (_, j) => keyOf(`kill9-${seed}-s${round}-${w}`, i * 8 + j));
          const res = await cl.put(nsw, ks, ks.map((k) => blockFor(k, SIZE)));
          ks.forEach((k, j) => { if (res[j] === 0 || res[j] === 1) { storm.push(k); acked++; } });
          written += ks.length;
          const probe = durable.slice(Math.floor(r() * (durable.length - 4))).slice(0, 4);
          const got = await cl.get(nsw, probe);
          probe.forEach((k, j) => { if (!got[j]) lost++; else wrong += wrongBytes(got[j]!, blockFor(k, SIZE)); });
        }
      }).map((p) => p.catch(() => undefined)); // the kill ends them with KVS_TIMEOUT/UNAVAILABLE
      await until(() => acked >= killAt, 120_000, `${killAt} storm acknowledgements`);
      peak = Math.max(peak, s.peakMiB());
      await s.kill9();
      stop = true;
      for (const cl of clients) cl.close();
      await Promise.all(loops);
    } finally {
      c.close();
      await s.kill9();
    }
  }
  return {
    attack: `kill -9 under mixed load (${rounds} rounds)`, count: written, wrongBytes: wrong, lost, peakRssMiB: peak,
    verdict: verdict(wrong === 0 && lost === 0),
    note: `${durable.length} durable blocks re-read every round; ${stormServed} storm blocks served after kills`,
  };
}
