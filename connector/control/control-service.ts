/**
 * ControlService — the handlers of kvstash.v1.Control (protocol/kvstash.proto holds the contract and its rules).
 * Handlers resolve the caller (bearer token → principal), resolve selectors with tenancy checks, and act on the
 * TierStack's control-plane primitives. Errors are KvstashErrors, turned into gRPC statuses by status.ts only.
 */
import * as grpc from '@grpc/grpc-js';
import { ErrorCode, KvstashError } from '../../protocol/errors.js';
import { logger } from '../log.js';
import { SERVER_VERSION, type PluginHost } from '../server/sidecar.js';
import { LOCAL, type AccessPolicy, type Principal } from './auth.js';
import type { AuthThrottle } from './auth-throttle.js';
import { BoundedStream } from './bounded-stream.js';
import { Resolver, type NamespaceMsg, type PrefixMsg, type SelectorMsg } from './selectors.js';
import { toServiceError } from './status.js';

type Msg = Record<string, unknown>;
export type CallObserver = (method: string, seconds: number, code: string) => void;

export interface ControlServiceOptions {
  policy: AccessPolicy;
  /** Messages a WatchTierEvents stream may hold back for a slow consumer before dropping. */
  streamBuffer: number;
  onCall?: CallObserver;
  onStreamDrop?: (method: string) => void;
  /** Throttle of failed authentications (auth-throttle.ts); none = unthrottled. */
  throttle?: AuthThrottle;
}

const CHUNK = 1024;
const MOVE_CONCURRENCY = 8;
const PROBE_KEY = `${'0'.repeat(32)}/${'0'.repeat(64)}`;
const tick = () => new Promise<void>((r) => setImmediate(r));

export class ControlService {
  readonly resolver: Resolver;
  private readonly log = logger('grpc');
  private readonly startedAt = Date.now();
  stopping = false;
  private readonly closers = new Set<() => void>();

  constructor(private readonly sidecar: PluginHost, private readonly opts: ControlServiceOptions) {
    this.resolver = new Resolver(sidecar, opts.policy, sidecar.limits.maxKeysPerRequest);
  }

  /** Mark the service as stopping and end every WatchTierEvents stream. */
  close(): void {
    this.stopping = true;
    for (const c of this.closers) c();
  }

  /** The caller's principal from `authorization: Bearer <token>`; LOCAL when auth is off. Failures are throttled per peer host. */
  principal(md: grpc.Metadata, peer = ''): Principal {
    if (!this.opts.policy.enabled) return LOCAL;
    this.opts.throttle?.admit(peer);
    const h = md.get('authorization')[0];
    const m = typeof h === 'string' ? /^Bearer\s+(\S+)$/i.exec(h) : null;
    const p = m ? this.opts.policy.byToken(m[1]!) : undefined;
    if (!p) {
      this.opts.throttle?.failed(peer);
      throw new KvstashError(ErrorCode.UNAUTHENTICATED, m ? 'unknown bearer token' : 'missing "authorization: Bearer <token>" metadata');
    }
    return p;
  }

  handlers(): grpc.UntypedServiceImplementation {
    return {
      Lookup: this.unary('Lookup', (r, p) => this.lookup(r, p)),
      Stats: this.unary('Stats', () => this.stats()),
      Pin: this.unary('Pin', (r, p) => this.pin(r, p)),
      Unpin: this.unary('Unpin', (r, p) => this.unpin(r, p)),
      Evict: this.unary('Evict', (r, p) => this.evict(r, p)),
      Health: this.unary('Health', () => this.health()),
      Clear: this.stream('Clear', (r, p, out) => this.clear(r, p, out)),
      Move: this.stream('Move', (r, p, out) => this.move(r, p, out)),
      WatchTierEvents: this.stream('WatchTierEvents', (r, p, out, call) => this.watch(r, p, out, call)),
      DropNamespaces: this.unary('DropNamespaces', (r, p) => this.dropNamespaces(r, p)),
    };
  }

  private unary(method: string, fn: (req: Msg, p: Principal) => Msg | Promise<Msg>): grpc.handleUnaryCall<Msg, Msg> {
    return (call, cb) => {
      const t0 = performance.now();
      Promise.resolve()
        .then(() => fn(call.request, this.principal(call.metadata, call.getPeer())))
        .then((res) => {
          this.opts.onCall?.(method, (performance.now() - t0) / 1000, 'OK');
          cb(null, res);
        }, (err) => this.fail(method, t0, err, (e) => cb(e)));
    };
  }

  private stream(method: string, fn: (req: Msg, p: Principal, out: BoundedStream<Msg>, call: grpc.ServerWritableStream<Msg, Msg>) => Promise<void>): grpc.handleServerStreamingCall<Msg, Msg> {
    return (call) => {
      const t0 = performance.now();
      const out = new BoundedStream<Msg>(call, this.opts.streamBuffer, () => this.opts.onStreamDrop?.(method));
      Promise.resolve()
        .then(() => fn(call.request, this.principal(call.metadata, call.getPeer()), out, call))
        .then(async () => {
          this.opts.onCall?.(method, (performance.now() - t0) / 1000, call.cancelled ? 'CANCELLED' : 'OK');
          await out.end();
        }, (err) => this.fail(method, t0, err, (e) => call.emit('error', e)));
    };
  }

  private fail(method: string, t0: number, err: unknown, send: (e: Partial<grpc.StatusObject>) => void): void {
    const se = toServiceError(err);
    const code = String(se.metadata?.get('kvstash-code')[0]);
    if (code === ErrorCode.INTERNAL) this.log.error({ err, method }, 'control call failed');
    else this.log.tr({ method, code }, se.message);
    this.opts.onCall?.(method, (performance.now() - t0) / 1000, code);
    send(se);
  }

  // ---- unary ---------------------------------------------------------------------------------------------

  private lookup(r: Msg, p: Principal): Msg {
    const { id } = this.resolver.namespace(r.namespace as NamespaceMsg, p);
    const hashes = this.resolver.hashes(r.prefix as PrefixMsg);
    const res = this.sidecar.tiers.lookup(hashes.map((h) => `${id}/${h.toString('hex')}`), r.prefetch === true);
    return {
      namespace_id: id, blocks: hashes.length, hit_blocks: res.hit,
      tiers: this.sidecar.tiers.tiers.map((t) => ({ tier: t.name, medium: t.medium, blocks: res.tiers[t.name] ?? 0, load_ms: res.loadMs[t.name] ?? 0 })),
    };
  }

  private pinStats(): Msg {
    const s = this.sidecar.tiers.pinStats();
    return { blocks: s.blocks, bytes: s.bytes, budget_bytes: Number.isFinite(s.budgetBytes) ? s.budgetBytes : 0, tags: s.tags };
  }

  private stats(): Msg {
    const st = this.sidecar.stats() as { uptime_s: number; requests: number; errors: number };
    return {
      server: SERVER_VERSION, uptime_s: st.uptime_s, blocks: this.sidecar.tiers.index.size, namespaces: this.sidecar.namespaces.size,
      requests: st.requests, errors: st.errors, pins: this.pinStats(),
      tiers: this.sidecar.tiers.stats().map((t) => ({
        name: t.name, medium: t.medium, bytes: t.bytes, budget_bytes: t.budgetBytes, blocks: t.blocks, hits: t.hits, misses: t.misses,
        evictions: t.evictions, queue_depth: t.queueDepth, dropped_saves: t.droppedSaves, checksum_failures: t.checksumFailures,
        promotions: t.promotions, demotions: t.demotions, write_errors: t.writeErrors, bytes_written: t.bytesWritten, read_bps: t.readBps,
      })),
    };
  }

  private tag(v: unknown): string {
    if (typeof v !== 'string' || v.length === 0 || v.length > 256) throw new KvstashError(ErrorCode.INVALID_ARGUMENT, 'tag must be a non-empty string of at most 256 chars');
    return v;
  }

  private pin(r: Msg, p: Principal): Msg {
    const tag = this.tag(r.tag);
    const keys = this.resolver.selection(r.selector as SelectorMsg, p).keys();
    const res = this.sidecar.tierControl.pin(keys, tag);
    if (res.exhausted) {
      const s = this.sidecar.tiers.pinStats();
      throw new KvstashError(ErrorCode.RESOURCE_EXHAUSTED, `pinning ${res.addedBytes} more bytes would exceed the pin budget of ${s.budgetBytes} bytes (${s.bytes} pinned)`);
    }
    this.log.info({ principal: p.id, tag, pinned: res.pinned, missing: res.missing, addedBytes: res.addedBytes }, 'pin');
    return { pinned: res.pinned, missing: res.missing, added_bytes: res.addedBytes, pins: this.pinStats() };
  }

  private unpin(r: Msg, p: Principal): Msg {
    const tag = this.tag(r.tag);
    const sel = r.selector as SelectorMsg | null;
    const within = sel && (sel.namespace?.kind || sel.tenant) ? new Set(this.resolver.selection(sel, p).keys()) : undefined;
    const mine = (k: string) => (within ? within.has(k) : true) && this.opts.policy.allows(p, this.resolver.tenantOfKey(k) ?? '');
    const unpinned = this.sidecar.tierControl.unpin(tag, mine);
    this.log.info({ principal: p.id, tag, unpinned }, 'unpin');
    return { unpinned, pins: this.pinStats() };
  }

  private evict(r: Msg, p: Principal): Msg {
    const tier = r.tier ? this.resolver.tierIndex(String(r.tier)) : undefined;
    const keys = this.resolver.selection(r.selector as SelectorMsg, p).keys();
    const n = { evicted: 0, pinned: 0, missing: 0 };
    for (const k of keys) n[this.sidecar.tierControl.evictFrom(k, tier)]++;
    this.log.info({ principal: p.id, tier: r.tier || 'all', ...n }, 'evict');
    return n;
  }

  private async health(): Promise<Msg> {
    const tiers = await Promise.all(this.sidecar.tiers.tiers.map(async (t, i) => {
      const t0 = performance.now();
      if (i === 0) return { name: t.name, driver: t.driver.name, ok: true, error: '', probe_ms: 0 };
      let timer: NodeJS.Timeout | undefined;
      if (t.writeFault !== undefined) return { name: t.name, driver: t.driver.name, ok: false, error: `last write failed: ${t.writeFault}`, probe_ms: 0 };
      try {
        await Promise.race([t.driver.has(PROBE_KEY), new Promise((_, rej) => { timer = setTimeout(() => rej(new Error('no answer within 2000 ms')), 2000); })]);
        return { name: t.name, driver: t.driver.name, ok: true, error: '', probe_ms: performance.now() - t0 };
      } catch (err) {
        return { name: t.name, driver: t.driver.name, ok: false, error: (err as Error).message, probe_ms: performance.now() - t0 };
      } finally {
        clearTimeout(timer);
      }
    }));
    const status = this.stopping ? 'NOT_SERVING' : tiers.every((t) => t.ok) ? 'SERVING' : 'DEGRADED';
    return { status, server: SERVER_VERSION, uptime_s: Math.round((Date.now() - this.startedAt) / 1000), endpoints: this.sidecar.endpoints, tiers };
  }

  private dropNamespaces(r: Msg, p: Principal): Msg {
    const sel = this.resolver.selection(r.selector as SelectorMsg, p);
    if (sel.scope === 'prefix') throw new KvstashError(ErrorCode.INVALID_ARGUMENT, 'DropNamespaces takes a namespace or a tenant, not a prefix');
    const ids = new Set(sel.namespace ? [sel.namespace] : this.sidecar.nsRegistry.ofTenant(sel.tenant));
    let removed = 0;
    if (r.include_blocks === true) removed = this.sidecar.tierControl.clear(() => true, { keys: sel.keys() }).removed;
    const busy = this.sidecar.namespacesWithBlocks(ids);
    const gone = [...ids].filter((id) => !busy.has(id));
    this.sidecar.nsRegistry.drop(gone);
    this.log.info({ principal: p.id, scope: sel.scope, tenant: sel.tenant, dropped: gone.length, kept: busy.size, blocks_removed: removed }, 'drop namespaces');
    return { dropped: gone.length, kept: busy.size, blocks_removed: removed, dropped_ids: gone };
  }

  // ---- streaming -------------------------------------------------------------------------------------------

  private async clear(r: Msg, p: Principal, out: BoundedStream<Msg>): Promise<void> {
    const notPrefix = () => new KvstashError(ErrorCode.INVALID_ARGUMENT, 'Clear takes a namespace or a tenant, not a prefix (use Evict)');
    if ((r.selector as SelectorMsg | null)?.prefix?.kind) throw notPrefix(); // bad usage before "no such namespace"
    const sel = this.resolver.selection(r.selector as SelectorMsg, p);
    if (sel.scope === 'prefix') throw notPrefix();
    const keys = sel.keys();
    const pr = { total: keys.length, done: 0, changed: 0, skipped: 0, failed: 0, finished: false };
    out.latest({ ...pr });
    for (let i = 0; i < keys.length && !out.isClosed; i += CHUNK) {
      const chunk = keys.slice(i, i + CHUNK);
      const res = this.sidecar.tierControl.clear(() => true, { keys: chunk, includePinned: r.include_pinned === true });
      pr.done += chunk.length;
      pr.changed += res.removed;
      pr.skipped += res.pinnedSkipped;
      pr.failed = pr.done - pr.changed - pr.skipped;
      out.latest({ ...pr });
      await tick();
    }
    pr.finished = !out.isClosed;
    this.log.info({ principal: p.id, scope: sel.scope, namespace: sel.namespace, tenant: sel.tenant, ...pr }, 'clear');
    out.latest({ ...pr });
  }

  private async move(r: Msg, p: Principal, out: BoundedStream<Msg>): Promise<void> {
    const to = this.resolver.tierIndex(String(r.to_tier ?? ''));
    const keys = this.resolver.selection(r.selector as SelectorMsg, p).keys();
    const pr = { total: keys.length, done: 0, changed: 0, skipped: 0, failed: 0, finished: false };
    out.latest({ ...pr });
    let next = 0;
    let lastSent = 0;
    const worker = async () => {
      while (next < keys.length && !out.isClosed) {
        const k = keys[next++]!;
        const res = await this.sidecar.tierControl.move(k, to).catch(() => 'failed' as const);
        pr.done++;
        if (res === 'moved') pr.changed++;
        else if (res === 'present' || res === 'pinned') pr.skipped++;
        else pr.failed++;
        const now = performance.now();
        if (now - lastSent > 50) {
          lastSent = now;
          out.latest({ ...pr });
        }
      }
    };
    await Promise.all(Array.from({ length: MOVE_CONCURRENCY }, worker));
    pr.finished = !out.isClosed;
    this.log.info({ principal: p.id, to: r.to_tier, ...pr }, 'move');
    out.latest({ ...pr });
  }

  private async watch(r: Msg, p: Principal, out: BoundedStream<Msg>, call: grpc.ServerWritableStream<Msg, Msg>): Promise<void> {
    const kinds = new Set((r.kinds as string[]).length ? (r.kinds as string[]) : ['stored', 'removed', 'corrupt']);
    for (const k of kinds) if (!['stored', 'removed', 'corrupt'].includes(k)) throw new KvstashError(ErrorCode.INVALID_ARGUMENT, `unknown event kind ${JSON.stringify(k)}`);
    const nsFilter = (r.namespace as NamespaceMsg | null)?.kind ? this.resolver.namespace(r.namespace as NamespaceMsg, p).id : undefined;
    const tenant = r.tenant ? String(r.tenant) : undefined;
    if (tenant) this.opts.policy.check(p, tenant);
    const tiers = this.sidecar.tiers;
    let seq = 0;
    const listeners = [...kinds].map((kind) => {
      const fn = (ev: { key: string; tier: string; medium?: string }) => {
        const ns = ev.key.slice(0, 32);
        if (nsFilter && ns !== nsFilter) return;
        const t = this.resolver.tenantOfKey(ev.key);
        if (tenant && t !== tenant) return;
        if (!this.opts.policy.allows(p, t ?? '')) return;
        out.push({
          seq: seq++, kind, namespace_id: ns, hash: Buffer.from(ev.key.slice(33), 'hex'), tier: ev.tier,
          medium: ev.medium ?? tiers.tiers.find((x) => x.name === ev.tier)?.medium ?? '', ts: Date.now() / 1000,
        });
      };
      tiers.on(kind, fn);
      return [kind, fn] as const;
    });
    call.sendMetadata(new grpc.Metadata());
    let done = () => undefined as void;
    await new Promise<void>((resolve) => {
      done = () => resolve();
      call.on('cancelled', done);
      call.on('close', done);
      call.on('error', done);
      this.closers.add(done);
      if (call.cancelled || this.stopping) resolve();
    });
    this.closers.delete(done);
    for (const [kind, fn] of listeners) tiers.off(kind, fn);
  }
}
