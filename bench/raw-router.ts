/**
 * The ceiling for bench/sidecar.ts: a bare ZeroMQ ROUTER on the same transport doing the least work a
 * KV server can do — answer a "put" with a tiny ack, a "get" with a preallocated block, an "echo" with
 * its payload; "keep" (k) answers like put but holds on to the block, as any store must (a ring of the last
 * 4,096 blocks), which shows what first-touch memory costs apart from the protocol. Request frame 0 is one
 * ASCII letter (p/k/g/e) + the block size for g.
 */
import { Router } from 'zeromq';

const endpoints = process.argv.slice(2);
const router = new Router({ sendHighWaterMark: 100_000, receiveHighWaterMark: 100_000, linger: 0 });
for (const ep of endpoints) await router.bind(ep);
const blocks = new Map<number, Buffer>();
const ack = Buffer.from('ok');
const kept: Buffer[] = [];
let next = 0;
process.stdout.write(`ready ${endpoints.map(() => router.lastEndpoint).join(' ')}\n`);
for await (const [id, head, ...rest] of router) {
  const kind = head![0];
  if (kind === 0x70) await router.send([id!, ack]);
  else if (kind === 0x6b) {
    kept[next++ % 4096] = rest[0]!;
    await router.send([id!, ack]);
  }
  else if (kind === 0x67) {
    const n = Number(head!.subarray(1).toString());
    let b = blocks.get(n);
    if (!b) blocks.set(n, (b = Buffer.alloc(n, 1)));
    await router.send([id!, ack, b]);
  } else await router.send([id!, head!, ...rest]);
}
