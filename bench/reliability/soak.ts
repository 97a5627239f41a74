/**
 * Soak: N clients (default 64) for S seconds against one sidecar, each writing its own blocks, reading them back
 * and looking them up, with the sidecar's RSS sampled every second. The working set fits DRAM, so a block whose
 * PUT was acknowledged as stored must be readable: a miss counts as acknowledged data lost (issue 9 item 4).
 */
import { KvstashClient } from '../../connector/client.js';
import { blockFor, keyOf, NS, rssOf, serve, sleep, tempDir, verdict, wrongBytes, type Row } from './common.js';

const SIZE = 32 * 1024;
const WORKING_SET = 64; // blocks per client: 64 clients × 64 × 32 KiB = 128 MiB < 512 MiB of DRAM

export async function soak(clients: number, seconds: number): Promise<Row> {
  const dir = tempDir('soak');
  const s = await serve(dir, ['--file-root', `${dir}/tier`, '--dram-bytes', '512MiB', '--file-bytes', '2GiB']);
  let ops = 0;
  let wrong = 0;
  let lost = 0;
  let errors = 0;
  let stop = false;
  const samples: number[] = [];
  const sampler = setInterval(() => samples.push(rssOf(s.pid).rss), 1000);
  const workers = Array.from({ length: clients }, async (_, w) => {
    const c = new KvstashClient(s.endpoint, { timeoutMs: 30_000 });
    try {
      const ns = await c.hello(NS);
      for (let round = 0; !stop; round++) {
        const ks = Array.from({ length: 4 }, (_, j) => keyOf(`soak-${w}`, (round * 4 + j) % WORKING_SET));
        try {
          const res = await c.put(ns, ks, ks.map((k) => blockFor(k, SIZE)));
          const got = await c.get(ns, ks);
          ks.forEach((k, j) => {
            if (res[j] !== 0 && res[j] !== 1) return; // dropped (busy): not acknowledged
            if (!got[j]) lost++;
            else wrong += wrongBytes(got[j]!, blockFor(k, SIZE));
          });
          await c.lookup(ns, ks);
          ops += 3;
        } catch {
          errors++;
          await sleep(10);
        }
      }
    } finally {
      c.close();
    }
  });
  await sleep(seconds * 1000);
  stop = true;
  await Promise.all(workers);
  clearInterval(sampler);
  const peak = s.peakMiB();
  await s.stop();
  const first = samples[Math.min(5, samples.length - 1)] ?? 0;
  const last = samples[samples.length - 1] ?? 0;
  return {
    attack: `soak: ${clients} clients for ${seconds} s`, count: ops, wrongBytes: wrong, lost, peakRssMiB: peak,
    verdict: verdict(wrong === 0 && lost === 0 && peak < 512 + 512),
    note: `${errors} request errors; RSS ${first.toFixed(0)} MiB at 5 s → ${last.toFixed(0)} MiB at the end (${samples.length} samples)`,
  };
}
