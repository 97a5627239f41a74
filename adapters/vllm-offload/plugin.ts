/**
 * vLLM OffloadingConnector secondary tier, sidecar side: the sidecar reads and writes the rows of vLLM's shared
 * CPU primary-tier file itself, so no KV bytes cross a socket; the engine-side module
 * (adapters/python/kvstash/vllm_offload.py) only forwards job descriptors.
 *
 * The primary-tier file (vLLM `vllm/v1/kv_offload/cpu/shared_offload_region.py`, SharedOffloadRegion, checked at
 * vllm-project/vllm@00a78d3): `/dev/shm/vllm_offload_<engine_id>.mmap`, `num_blocks × row_stride` bytes, block b
 * is the row at `b × row_stride` (every worker's and every canonical tensor's bytes of that block, page-aligned);
 * secondary tiers address block b as `primary_kv_view[b]` (`create_kv_memoryview`). The tiering manager
 * (`vllm/v1/kv_offload/tiering/manager.py`, vllm-project/vllm@01bb462) pins the source rows of a store job and
 * allocates the target rows of a load job until the job is reported finished, so positional reads and writes
 * of those rows here never race the engine.
 *
 * Ops on the data socket (plugin ops; msgpack header fields besides v/id/op; no binary frames):
 * - common: `path` (the primary-tier file; must start with one of the configured prefixes, else
 *   KVS_PERMISSION_DENIED), `row_stride`, `num_blocks` (ints; the file must hold num_blocks × row_stride bytes,
 *   else KVS_BAD_FIELD), `namespace` (a namespace descriptor: model, engine, layout, ranks, tenant).
 * - OFFLOAD_STORE + `keys` (list of binary OffloadKeys) + `block_ids` (ints): each row is read and put into the
 *   tier stack under `<ns>/<sha256(key) hex>` (budgets, heat, checksums, write-behind to file/NFS/S3 like any
 *   block); a key already held is not read again. Reply `stored` (new), `present`, `dropped` counts.
 * - OFFLOAD_LOAD + `keys` + `block_ids`: every key is read from the fastest tier holding it (lower tiers are
 *   checksum-verified) and written to its row. Reply `ok` true, or `ok` false with `missing` (indexes); rows of a
 *   failed load may be partly written (vLLM frees them on failure).
 * - OFFLOAD_LOOKUP + `keys`: reply `hits` (bools).
 * File handles are opened on first use per path and kept (a file replaced under the same path, e.g. an engine
 * restart, is detected by inode and reopened).
 */
import { createHash } from 'node:crypto';
import { open, stat, type FileHandle } from 'node:fs/promises';
import type { Logger } from 'pino';
import { logger } from '../../connector/log.js';
import type { Sidecar, SidecarPlugin } from '../../connector/server/sidecar.js';
import { ErrorCode, KvstashError } from '../../protocol/errors.js';
import { PutResult, type NamespaceDescriptor } from '../../protocol/wire.js';

export interface OffloadOptions {
  /** Allowed path prefixes of primary-tier files, e.g. ["/dev/shm/vllm_offload_"]. */
  pathPrefixes: string[];
  log?: Logger;
}

interface Region { fh: FileHandle; ino: number; rowStride: number; numBlocks: number }

const MAX_KEYS = 65_536;

function bad(msg: string): never {
  throw new KvstashError(ErrorCode.BAD_FIELD, msg);
}

function intField(h: Record<string, unknown>, k: string, min: number): number {
  const v = h[k];
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) bad(`"${k}" must be an integer ≥ ${min}, got ${JSON.stringify(v)}`);
  return v;
}

export class VllmOffloadPlugin implements SidecarPlugin {
  readonly name = 'vllm-offload';
  readonly counters = { stores: 0, loads: 0, lookups: 0, rowsRead: 0, rowsWritten: 0, loadMisses: 0, failures: 0 };
  private readonly regions = new Map<string, Promise<Region>>();
  private sidecar: Sidecar | undefined;
  private readonly log: Logger;

  constructor(readonly opts: OffloadOptions) {
    this.log = opts.log ?? logger('offload');
    if (opts.pathPrefixes.some((p) => !p.startsWith('/') || p.includes('..'))) {
      throw new KvstashError(ErrorCode.CONFIG, `vllmOffload: path prefixes must be absolute without "..", got ${JSON.stringify(opts.pathPrefixes)}`);
    }
  }

  attach(sidecar: Sidecar): void {
    this.sidecar = sidecar;
    const wrap = (fn: (h: Record<string, unknown>) => Promise<Record<string, unknown>> | Record<string, unknown>) => async (h: Record<string, unknown>) => {
      try {
        return await fn(h);
      } catch (err) {
        this.counters.failures++;
        this.log.warn({ err, path: h.path }, `${String(h.op)} failed`);
        throw err;
      }
    };
    sidecar.registerOp('OFFLOAD_STORE', wrap((h) => this.store(h)));
    sidecar.registerOp('OFFLOAD_LOAD', wrap((h) => this.load(h)));
    sidecar.registerOp('OFFLOAD_LOOKUP', wrap((h) => this.lookup(h)));
    sidecar.registerOp('OFFLOAD_STATS', () => ({ offload: { ...this.counters, regions: this.regions.size } }));
  }

  async start(): Promise<void> {
    /* ops are registered in attach */
  }

  async stop(): Promise<void> {
    const all = [...this.regions.values()];
    this.regions.clear();
    for (const r of all) await r.then((x) => x.fh.close(), () => undefined);
  }

  private ns(h: Record<string, unknown>): string {
    const d = h.namespace as NamespaceDescriptor | undefined;
    if (!d || typeof d !== 'object') bad('"namespace" must be a namespace descriptor map');
    return this.sidecar!.registerNamespace(d);
  }

  private keys(h: Record<string, unknown>, ns: string, withBlocks: boolean): { keys: string[]; blocks: number[] } {
    const raw = h.keys;
    if (!Array.isArray(raw) || raw.length > MAX_KEYS || !raw.every((k) => k instanceof Uint8Array && k.length > 0 && k.length <= 256)) {
      bad(`"keys" must be a list of at most ${MAX_KEYS} binary keys of 1..256 bytes`);
    }
    const keys = raw.map((k) => ns + '/' + createHash('sha256').update(k as Uint8Array).digest('hex'));
    if (!withBlocks) return { keys, blocks: [] };
    const b = h.block_ids;
    if (!Array.isArray(b) || b.length !== raw.length || !b.every((x) => Number.isSafeInteger(x) && x >= 0)) bad('"block_ids" must be one non-negative integer per key');
    return { keys, blocks: b as number[] };
  }

  private async region(h: Record<string, unknown>): Promise<Region> {
    const p = h.path;
    if (typeof p !== 'string' || p.includes('/../') || !this.opts.pathPrefixes.some((x) => p.startsWith(x))) {
      throw new KvstashError(ErrorCode.PERMISSION_DENIED, `"path" ${JSON.stringify(p)} is outside the allowed primary-tier prefixes ${JSON.stringify(this.opts.pathPrefixes)}`);
    }
    const rowStride = intField(h, 'row_stride', 1);
    const numBlocks = intField(h, 'num_blocks', 1);
    const st = await stat(p).catch((err: Error) => {
      throw new KvstashError(ErrorCode.NOT_FOUND, `primary-tier file ${p}: ${err.message}`, { cause: err });
    });
    if (st.size < rowStride * numBlocks) bad(`primary-tier file ${p} holds ${st.size} bytes, expected num_blocks × row_stride = ${rowStride * numBlocks}`);
    let r = this.regions.get(p);
    const cur = r ? await r.catch(() => undefined) : undefined;
    if (!cur || cur.ino !== st.ino || cur.rowStride !== rowStride || cur.numBlocks !== numBlocks) {
      if (cur) void cur.fh.close().catch(() => undefined);
      r = open(p, 'r+').then((fh) => ({ fh, ino: st.ino, rowStride, numBlocks }));
      this.regions.set(p, r);
      r.catch(() => this.regions.delete(p));
    }
    return r!;
  }

  private checkBlocks(reg: Region, blocks: number[]): void {
    for (const b of blocks) if (b >= reg.numBlocks) bad(`block id ${b} is outside the primary tier (num_blocks ${reg.numBlocks})`);
  }

  private async store(h: Record<string, unknown>): Promise<Record<string, unknown>> {
    this.counters.stores++;
    const ns = this.ns(h);
    const { keys, blocks } = this.keys(h, ns, true);
    const reg = await this.region(h);
    this.checkBlocks(reg, blocks);
    const tiers = this.sidecar!.tiers;
    let stored = 0, present = 0, dropped = 0;
    await Promise.all(keys.map(async (k, i) => {
      if ((tiers.entry(k)?.where ?? 0) !== 0) {
        tiers.put(k, Buffer.alloc(0)); // refreshes heat; an existing block is kept as is (PRESENT)
        present++;
        return;
      }
      const buf = Buffer.allocUnsafe(reg.rowStride);
      const { bytesRead } = await reg.fh.read(buf, 0, reg.rowStride, blocks[i]! * reg.rowStride);
      if (bytesRead !== reg.rowStride) throw new KvstashError(ErrorCode.STORAGE, `short read of block ${blocks[i]} (${bytesRead} of ${reg.rowStride} bytes)`);
      this.counters.rowsRead++;
      const r = tiers.put(k, buf);
      if (r === PutResult.STORED) stored++;
      else if (r === PutResult.PRESENT) present++;
      else dropped++;
    }));
    return { stored, present, dropped };
  }

  private async load(h: Record<string, unknown>): Promise<Record<string, unknown>> {
    this.counters.loads++;
    const ns = this.ns(h);
    const { keys, blocks } = this.keys(h, ns, true);
    const reg = await this.region(h);
    this.checkBlocks(reg, blocks);
    const tiers = this.sidecar!.tiers;
    const vals = tiers.getResident(keys) ?? (await tiers.get(keys));
    try {
      const missing: number[] = [];
      for (let i = 0; i < keys.length; i++) if (!vals[i] || vals[i]!.length !== reg.rowStride) missing.push(i);
      if (missing.length) {
        this.counters.loadMisses += missing.length;
        return { ok: false, missing };
      }
      // allSettled: every write is over before the buffers go back to the stack's read pool (finally).
      const writes = await Promise.allSettled(vals.map(async (v, i) => {
        const { bytesWritten } = await reg.fh.write(v!, 0, reg.rowStride, blocks[i]! * reg.rowStride);
        if (bytesWritten !== reg.rowStride) throw new KvstashError(ErrorCode.STORAGE, `short write of block ${blocks[i]}`);
        this.counters.rowsWritten++;
      }));
      for (const w of writes) if (w.status === 'rejected') throw w.reason;
      return { ok: true, missing: [] };
    } finally {
      tiers.release(vals); // copied into the worker's region (or not needed): pooled memory may be reused
    }
  }

  private lookup(h: Record<string, unknown>): Record<string, unknown> {
    this.counters.lookups++;
    const ns = this.ns(h);
    const { keys } = this.keys(h, ns, false);
    return { hits: this.sidecar!.tiers.exists(keys) };
  }
}
