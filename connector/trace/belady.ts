/**
 * Offline references for trace replays (bench/traces/README.md semantics): Belady's optimum and plain LRU
 * over a block cache of a given capacity, with prefix semantics — a request reuses only the leading run of its
 * blocks that are cached; then every block of the request is accessed (cached ones refreshed, the others offered
 * for caching).
 *
 * Belady: on each insertion into a full cache, evict the cached block — or skip the new one — whose next use lies
 * farthest in the future; ties (e.g. never used again) go to the deeper block of a chain, which keeps the cache
 * prefix-closed, so it is also the optimum under prefix semantics.
 */
export interface TraceRequest {
  timestamp: number;
  hash_ids: number[];
}

export interface SimResult {
  blocks: number;
  hits: number;
  inserts: number;
}

/** Max-heap of [nextUse, depth, id, version] with lazy deletion. */
class FarthestHeap {
  private readonly a: [number, number, number, number][] = [];
  push(x: [number, number, number, number]): void {
    const a = this.a;
    a.push(x);
    for (let i = a.length - 1; i > 0;) {
      const p = (i - 1) >> 1;
      if (!this.gt(a[i]!, a[p]!)) break;
      [a[i], a[p]] = [a[p]!, a[i]!];
      i = p;
    }
  }
  peek(): [number, number, number, number] | undefined {
    return this.a[0];
  }
  pop(): void {
    const a = this.a;
    const last = a.pop()!;
    if (a.length === 0) return;
    a[0] = last;
    for (let i = 0; ;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < a.length && this.gt(a[l]!, a[m]!)) m = l;
      if (r < a.length && this.gt(a[r]!, a[m]!)) m = r;
      if (m === i) break;
      [a[i], a[m]] = [a[m]!, a[i]!];
      i = m;
    }
  }
  private gt(x: [number, number, number, number], y: [number, number, number, number]): boolean {
    return x[0] !== y[0] ? x[0] > y[0] : x[1] > y[1];
  }
}

/** Belady's optimum at `capacity` blocks. */
export function beladyHits(reqs: TraceRequest[], capacity: number): SimResult {
  // next[a]: index of the next access of the block accessed at flat position a (Infinity if none).
  let total = 0;
  for (const r of reqs) total += r.hash_ids.length;
  const next = new Float64Array(total);
  const seenAt = new Map<number, number>();
  for (let ri = reqs.length - 1, a = total - 1; ri >= 0; ri--) {
    const ids = reqs[ri]!.hash_ids;
    for (let j = ids.length - 1; j >= 0; j--, a--) {
      next[a] = seenAt.get(ids[j]!) ?? Infinity;
      seenAt.set(ids[j]!, a);
    }
  }
  const version = new Map<number, number>(); // cached id → version of its live heap entry
  const heap = new FarthestHeap();
  let ver = 0;
  let hits = 0;
  let inserts = 0;
  let a = 0;
  for (const r of reqs) {
    const ids = r.hash_ids;
    let h = 0;
    while (h < ids.length && version.has(ids[h]!)) h++;
    hits += h;
    for (let j = 0; j < ids.length; j++, a++) {
      const id = ids[j]!;
      const nu = next[a]!;
      if (version.has(id)) {
        version.set(id, ++ver);
        heap.push([nu, j, id, ver]);
        continue;
      }
      if (capacity <= 0) continue;
      if (version.size >= capacity) {
        let top = heap.peek();
        while (top && version.get(top[2]) !== top[3]) {
          heap.pop();
          top = heap.peek();
        }
        if (!top || nu > top[0] || (nu === top[0] && j >= top[1])) continue; // the new block is the farthest: skip it
        heap.pop();
        version.delete(top[2]);
      }
      version.set(id, ++ver);
      heap.push([nu, j, id, ver]);
      inserts++;
    }
  }
  return { blocks: total, hits, inserts };
}

/** Plain LRU at `capacity` blocks (a request's blocks are touched deepest-first, so its root is most recent). */
export function lruHits(reqs: TraceRequest[], capacity: number): SimResult {
  const cache = new Map<number, true>();
  let blocks = 0;
  let hits = 0;
  let inserts = 0;
  for (const r of reqs) {
    const ids = r.hash_ids;
    blocks += ids.length;
    let h = 0;
    while (h < ids.length && cache.has(ids[h]!)) h++;
    hits += h;
    for (let j = ids.length - 1; j >= 0; j--) {
      const id = ids[j]!;
      if (cache.delete(id)) {
        cache.set(id, true);
        continue;
      }
      if (capacity <= 0) continue;
      if (cache.size >= capacity) cache.delete(cache.keys().next().value!);
      cache.set(id, true);
      inserts++;
    }
  }
  return { blocks, hits, inserts };
}

/**
 * LRU that knows which blocks are ever used again (an oracle no online policy has): it caches no block that is never
 * reused and drops a block at its last use. The gap between this and Belady is what knowing *when* a block comes back
 * is worth; the gap between LRU and this is what a perfect admission filter could win (docs/eviction.md).
 */
export function reuseOracleLruHits(reqs: TraceRequest[], capacity: number): SimResult {
  const left = new Map<number, number>();
  for (const r of reqs) for (const id of r.hash_ids) left.set(id, (left.get(id) ?? 0) + 1);
  const cache = new Map<number, true>();
  let blocks = 0;
  let hits = 0;
  let inserts = 0;
  for (const r of reqs) {
    const ids = r.hash_ids;
    blocks += ids.length;
    let h = 0;
    while (h < ids.length && cache.has(ids[h]!)) h++;
    hits += h;
    for (let j = ids.length - 1; j >= 0; j--) {
      const id = ids[j]!;
      const more = left.set(id, left.get(id)! - 1).get(id)! > 0;
      const had = cache.delete(id);
      if (!more || capacity <= 0) continue;
      if (!had) {
        if (cache.size >= capacity) cache.delete(cache.keys().next().value!);
        inserts++;
      }
      cache.set(id, true);
    }
  }
  return { blocks, hits, inserts };
}
