/**
 * Synthetic request traces for the policy bench (`kvstash bench trace --workload …`), in the Mooncake trace format
 * (bench/traces/README.md): per request a timestamp (ms) and the ids of its 512-token prefix blocks. Each generator
 * is a different reuse shape; all are seeded (same seed → same trace) so runs compare.
 *
 * Rules:
 * - Block ids are prefix hashes: two requests share id i at position j only if their first j + 1 blocks agree, so
 *   prefix semantics hold exactly as in the public trace.
 * - A generator takes only `seed` and `requests`; its shape constants live here, documented in docs/eviction.md.
 * - Tuning: `HELD_OUT_SEED` is never used while choosing a policy's parameters; the bench reports it separately as
 *   the check on workloads nobody tuned on.
 */
import type { TraceRequest } from './belady.js';

export const TUNING_SEED = 1;
export const HELD_OUT_SEED = 7_331;

/** mulberry32: small, fast, good enough for workload shapes. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Exponential with the given mean. */
const expo = (r: () => number, mean: number) => -Math.log(1 - r()) * mean;
/** Log-normal with the given median and shape. */
const lognormal = (r: () => number, median: number, sigma: number) => median * Math.exp(sigma * Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r()));

/** Zipf(s) sampler over 0..n-1 (inverse CDF on a precomputed table). */
function zipf(r: () => number, n: number, s: number): () => number {
  const cdf = new Float64Array(n);
  let sum = 0;
  for (let i = 0; i < n; i++) cdf[i] = sum += 1 / Math.pow(i + 1, s);
  return () => {
    const x = r() * sum;
    let lo = 0;
    let hi = n - 1;
    while (lo < hi) {
      const m = (lo + hi) >> 1;
      if (cdf[m]! < x) lo = m + 1;
      else hi = m;
    }
    return lo;
  };
}

/** Hands out fresh block ids. */
class Ids {
  private next = 0;
  fresh(n: number): number[] {
    return Array.from({ length: Math.max(0, n) }, () => this.next++);
  }
}

/** Open sessions (conversations, agent runs) arriving at `rate` per second; each step appends to its own prefix. */
function sessions(seed: number, requests: number, opts: {
  ratePerS: number; thinkMedianS: number; thinkSigma: number; continueP: number;
  start: (r: () => number, ids: Ids) => number[]; step: (r: () => number, ids: Ids, prefix: number[]) => number[];
}): TraceRequest[] {
  const r = rng(seed);
  const ids = new Ids();
  const out: TraceRequest[] = [];
  // Pending next turns: [time, prefix]; a small binary heap keyed by time.
  const heap: { t: number; prefix: number[] }[] = [];
  const push = (x: { t: number; prefix: number[] }) => {
    heap.push(x);
    for (let i = heap.length - 1; i > 0;) { const p = (i - 1) >> 1; if (heap[p]!.t <= heap[i]!.t) break; [heap[p], heap[i]] = [heap[i]!, heap[p]!]; i = p; }
  };
  const pop = () => {
    const top = heap[0]!;
    const last = heap.pop()!;
    if (heap.length) {
      heap[0] = last;
      for (let i = 0; ;) {
        const l = 2 * i + 1; let m = i;
        if (l < heap.length && heap[l]!.t < heap[m]!.t) m = l;
        if (l + 1 < heap.length && heap[l + 1]!.t < heap[m]!.t) m = l + 1;
        if (m === i) break;
        [heap[m], heap[i]] = [heap[i]!, heap[m]!]; i = m;
      }
    }
    return top;
  };
  let nextArrival = 0;
  while (out.length < requests) {
    let t: number;
    let hashIds: number[];
    if (heap.length && heap[0]!.t < nextArrival) {
      const s = pop();
      t = s.t;
      hashIds = opts.step(r, ids, s.prefix);
    } else {
      t = nextArrival;
      nextArrival += expo(r, 1000 / opts.ratePerS);
      hashIds = opts.start(r, ids);
    }
    out.push({ timestamp: Math.round(t), hash_ids: hashIds });
    // The request's last block is partial (the next turn extends it into a different block): drop it from the prefix.
    if (r() < opts.continueP) push({ t: t + 1000 * lognormal(r, opts.thinkMedianS, opts.thinkSigma), prefix: hashIds.slice(0, -1) });
  }
  return out;
}

/** Multi-turn chat: a few shared system prompts, user turns of a few blocks, think time of a minute or two. */
export function chat(seed: number, requests: number): TraceRequest[] {
  const ids0 = new Ids();
  const systems = Array.from({ length: 4 }, (_, i) => ids0.fresh(1 + 2 * i));
  const offset = 1000;
  return sessions(seed, requests, {
    ratePerS: 2, thinkMedianS: 90, thinkSigma: 0.9, continueP: 0.6,
    start: (r, ids) => [...systems[Math.floor(r() * systems.length)]!, ...ids.fresh(2 + Math.floor(expo(r, 6))).map((x) => x + offset)],
    step: (r, ids, p) => [...p, ...ids.fresh(1 + Math.floor(expo(r, 3))).map((x) => x + offset)],
  });
}

/** Agents: a long task prompt, then tool calls whose long outputs are re-read by every later step, seconds apart. */
export function agent(seed: number, requests: number): TraceRequest[] {
  const ids0 = new Ids();
  const tools = ids0.fresh(8); // the shared tool schema
  const offset = 1000;
  return sessions(seed, requests, {
    ratePerS: 0.5, thinkMedianS: 8, thinkSigma: 1.2, continueP: 0.9,
    start: (r, ids) => [...tools, ...ids.fresh(4 + Math.floor(expo(r, 8))).map((x) => x + offset)],
    step: (r, ids, p) => [...p, ...ids.fresh(2 + Math.floor(expo(r, r() < 0.3 ? 24 : 4))).map((x) => x + offset)],
  });
}

/** RAG: a system prompt, then 1–3 documents drawn from a shared pool with Zipf popularity, then a short question. */
export function rag(seed: number, requests: number): TraceRequest[] {
  const r = rng(seed);
  const ids = new Ids();
  const system = ids.fresh(2);
  const docs = 4000;
  const docLen = Array.from({ length: docs }, () => 2 + Math.floor(expo(r, 6)));
  const pick = zipf(r, docs, 0.9);
  // A document's blocks depend on what precedes it (prefix hashes): memoise the chain per (prefix, doc).
  const children = new Map<string, number[]>();
  const out: TraceRequest[] = [];
  let t = 0;
  for (let i = 0; i < requests; i++) {
    t += expo(r, 400);
    let chain = [...system];
    const n = 1 + Math.floor(r() * 3);
    for (let d = 0; d < n; d++) {
      const doc = pick();
      const k = `${chain[chain.length - 1]}:${doc}`;
      let blocks = children.get(k);
      if (!blocks) children.set(k, (blocks = ids.fresh(docLen[doc]!)));
      chain = chain.concat(blocks);
    }
    out.push({ timestamp: Math.round(t), hash_ids: chain.concat(ids.fresh(1 + Math.floor(r() * 2))) });
  }
  return out;
}

/** Long shared system prompts (a few, 20–60 blocks) under many short single-turn and two-turn requests. */
export function sysprompt(seed: number, requests: number): TraceRequest[] {
  const ids0 = new Ids();
  const prompts = [20, 32, 48, 60, 24, 40].map((n) => ids0.fresh(n));
  const pop = [0.4, 0.2, 0.15, 0.1, 0.1, 0.05];
  const offset = 1000;
  return sessions(seed, requests, {
    ratePerS: 10, thinkMedianS: 30, thinkSigma: 1, continueP: 0.3,
    start: (r, ids) => {
      let x = r();
      let i = 0;
      while (i < pop.length - 1 && (x -= pop[i]!) > 0) i++;
      return [...prompts[i]!, ...ids.fresh(1 + Math.floor(expo(r, 2))).map((v) => v + offset)];
    },
    step: (r, ids, p) => [...p, ...ids.fresh(1 + Math.floor(expo(r, 2))).map((v) => v + offset)],
  });
}

export const WORKLOADS: Record<string, (seed: number, requests: number) => TraceRequest[]> = { chat, agent, rag, sysprompt };
