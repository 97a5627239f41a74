/**
 * Child process for the segment-log crash tests (test/storage-segment-crash.test.ts): opens a SegmentDriver and
 * either appends values forever, saying `acked <i>` after each put resolves, or compacts what it finds at open
 * (saying `open`, `compacted <n>` as segments go, then `settled`). The parent kills it with SIGKILL at some point.
 */
import { checksum } from '../../connector/checksum.js';
import { SegmentDriver, parseSegmentConfig } from '../../connector/storage/segment.js';

export const crashKey = (i: number): string => `${'d'.repeat(32)}/${i.toString(16).padStart(64, '0')}`;
export const crashValue = (i: number, size: number): Buffer => Buffer.alloc(size, `kvstash-crash:${i}:`);

if (process.argv[2]) {
  const a = JSON.parse(process.argv[2]) as { root: string; mode: 'append' | 'compact'; size: number; segmentBytes: number; from?: number };
  const d = new SegmentDriver(parseSegmentConfig({ root: a.root, segmentBytes: a.segmentBytes, compactBelow: a.mode === 'compact' ? 0.9 : 0 }));
  await d.open();
  if (a.mode === 'compact') {
    process.stdout.write('open\n');
    let seen = 0;
    const poll = setInterval(() => {
      const n = d.stats().compactions!;
      if (n !== seen) process.stdout.write(`compacted ${(seen = n)}\n`);
    }, 1);
    await d.settle();
    clearInterval(poll);
    process.stdout.write('settled\n');
  } else {
    for (let i = a.from ?? 0; ; i++) {
      const v = crashValue(i, a.size);
      await d.put(crashKey(i), v, { checksum: checksum(v) });
      process.stdout.write(`acked ${i}\n`);
    }
  }
  await d.close();
}
