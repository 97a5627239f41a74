/**
 * FastIndex — the LOOKUP/EXISTS index of the TierStack. Per namespace, 30 bits of the block hash as a
 * small-integer Map key (≈10× faster than string keys on 8,192-block chains, no allocation per key) → entry,
 * confirmed on 30 more bits; entries with equal first halves are chained through `nextFast`.
 *
 * It is advisory: a false positive (two keys sharing 60 bits in one namespace) only makes a LOOKUP over-report;
 * the GET that follows always matches the full 256-bit key, answers a miss, and the engine recomputes.
 */
import type { BlockEntry } from './tier-types.js';

export class FastIndex {
  private readonly byNs = new Map<string, Map<number, BlockEntry>>();

  add(e: BlockEntry): void {
    e.h1 = parseInt(e.key.substr(33, 8), 16) >>> 2;
    e.h2 = parseInt(e.key.substr(41, 8), 16) >>> 2;
    const ns = e.key.slice(0, 32);
    let m = this.byNs.get(ns);
    if (!m) this.byNs.set(ns, (m = new Map()));
    const head = m.get(e.h1);
    if (head && head !== e) e.nextFast = head;
    m.set(e.h1, e);
  }

  drop(e: BlockEntry): void {
    const m = this.byNs.get(e.key.slice(0, 32));
    if (!m || e.h1 === undefined) return;
    let cur = m.get(e.h1);
    if (cur === e) {
      if (e.nextFast) m.set(e.h1, e.nextFast);
      else m.delete(e.h1);
    } else {
      while (cur && cur.nextFast !== e) cur = cur.nextFast;
      if (cur) cur.nextFast = e.nextFast;
    }
    e.nextFast = undefined;
  }

  namespace(ns: string): Map<number, BlockEntry> | undefined {
    return this.byNs.get(ns);
  }

  /** The entry for key i of a wire `keys` buffer (n × 32 bytes), looked up in namespace map `m`. */
  get(m: Map<number, BlockEntry> | undefined, keys: Buffer, i: number): BlockEntry | undefined {
    if (!m) return undefined;
    let e = m.get(keys.readUInt32BE(i * 32) >>> 2);
    if (!e) return undefined;
    const h2 = keys.readUInt32BE(i * 32 + 4) >>> 2;
    while (e && e.h2 !== h2) e = e.nextFast;
    return e;
  }
}
