/**
 * The sidecar: a ZeroMQ ROUTER speaking wire protocol v1 (protocol/README.md) over the TierStack.
 *
 * - One receive loop; DRAM hits are answered synchronously, lower-tier reads asynchronously (replies may
 *   overtake each other; clients match them by id).
 * - One send queue (zeromq.js allows one send in flight per socket). Replies to peers that went away are
 *   dropped by the ROUTER.
 * - Bad input gets an error reply with a stable code; a message whose id cannot be read is answered with id 0;
 *   a message with no identity frame is dropped. Nothing a client sends can stop the loop.
 * - Per-client in-flight bytes (requests being served plus replies waiting to be sent) are bounded;
 *   beyond the bound requests are refused with KVS_BUSY.
 * - Plugins (lm:// server, KV-events index, gRPC control plane, metrics) attach with `use()` and are
 *   started after and stopped before the data socket.
 */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { Router } from 'zeromq';
import { decodeRequest, encodeError, encodeReply, ProtocolError } from '../../protocol/codec.js';
import { ErrorCode, isErrorCode, KvstashError, toKvstashError } from '../../protocol/errors.js';
import { ALL_OPS, KEY_BYTES, PROTOCOL_VERSION, PutResult, type Limits, type NamespaceDescriptor, type Request } from '../../protocol/wire.js';
import { checksum } from '../checksum.js';
import type { Config } from '../config.js';
import { assertEndpointsFree, probeEndpoint } from './endpoint-probe.js';
import { NamespaceRegistry } from './namespace-registry.js';
import { logger } from '../log.js';
import { ArenaOps } from './arena-ops.js';
import { buildTierStack } from '../tiers/build-stack.js';
import { ArenaStore } from '../storage/arena.js';
import { defaultRegistry, type DriverRegistry } from '../storage/registry.js';
import type { TierStack } from '../tiers/tier-stack.js';
import { LeaseBook } from './leases.js';
import { VERSION } from '../version.js';
import type { EngineBlocks, OpHandler, PeerContext, PluginHost, PrincipalResolver, RequestGuard, RequestObserver, SidecarPlugin, StatsSource, TierControl, TierWrites } from './plugin.js';

export const SERVER_VERSION = `kvstash/${VERSION}`;
/** Namespaces one sidecar registers at most (each HELLO of a new descriptor adds one; they are persisted). */
export const MAX_NAMESPACES = 65_536;

export type { EngineBlocks, OpHandler, PeerContext, PluginHost, PrincipalResolver, RequestGuard, RequestObserver, SidecarPlugin, StatsSource, TierControl, TierWrites, TiersView } from './plugin.js';

export function storageKeys(ns: string, keys: Buffer): string[] {
  const hex = keys.toString('hex');
  const n = keys.length / KEY_BYTES;
  const out = new Array<string>(n);
  for (let i = 0; i < n; i++) out[i] = ns + '/' + hex.substr(i * 2 * KEY_BYTES, 2 * KEY_BYTES);
  return out;
}

export class Sidecar implements PluginHost {
  readonly tiers: TierStack;
  /** Same-host arena ops, when the DRAM tier lives in shared memory (arenaDir set). */
  readonly arena: ArenaOps | undefined;
  readonly namespaces = new Map<string, NamespaceDescriptor>();
  readonly limits: Limits;
  readonly counters = { requests: 0, errors: 0, byOp: {} as Record<string, number>, byCode: {} as Record<string, number> };
  readonly log = logger('zmq');
  /** Registered namespaces (`namespaces` is its map), quotas and expiry (namespace-registry.ts). */
  readonly nsRegistry: NamespaceRegistry;
  private readonly guards: RequestGuard[] = [];
  private readonly operatorOpNames = new Set<string>();
  private readonly observers: RequestObserver[] = [];
  private readonly blockListeners: ((blocks: EngineBlocks) => void)[] = [];
  private readonly socketSetups: ((router: Router) => void)[] = [];
  private principalOf: PrincipalResolver | undefined;
  private router: Router | undefined;
  private readonly plugins: SidecarPlugin[] = [];
  private nsTimer: NodeJS.Timeout | undefined;
  private readonly extraOps = new Map<string, OpHandler>();
  readonly statsSources: StatsSource[] = [];
  private readonly extraOpNames = new Set<string>();
  private readonly outbox: { frames: Buffer[]; peer: string | undefined; bytes: number }[] = [];
  private sending = false;
  private readonly inflight = new Map<string, number>();
  private boundEndpoints: string[] = [];
  private readonly startedAt = Date.now();
  private stopped = false;
  /** Short pins an engine's LOOKUP takes on the blocks it promised (leases.ts). */
  readonly leases: LeaseBook;

  constructor(readonly config: Config, readonly registry: DriverRegistry = defaultRegistry()) {
    this.tiers = buildTierStack(config, registry);
    const dram = this.tiers.dram;
    if (dram instanceof ArenaStore) {
      dram.tenantOf = (ns) => this.namespaces.get(ns)?.tenant ?? 'default';
      this.arena = new ArenaOps(dram, this.tiers);
    }
    this.leases = new LeaseBook(this.tiers);
    this.limits = {
      maxMessageBytes: config.maxMessageBytes, maxBlockBytes: config.maxBlockBytes,
      maxInflightBytes: config.maxInflightBytes, maxKeysPerRequest: config.maxKeysPerRequest,
    };
    this.nsRegistry = new NamespaceRegistry({
      map: this.namespaces, file: config.fileRoot ? path.join(config.fileRoot, 'namespaces.json') : undefined, max: MAX_NAMESPACES,
      perTenant: Number(config.namespacesPerTenant ?? MAX_NAMESPACES), idleMs: Number(config.namespaceIdleSeconds ?? 0) * 1000, log: this.log,
    });
  }

  use(plugin: SidecarPlugin): this {
    this.plugins.push(plugin);
    plugin.attach?.(this);
    return this;
  }

  /** Register a plugin op (name in capitals, not a core op); `operator`: only operators may call it (plugin.ts). */
  registerOp(name: string, handler: OpHandler, opts: { operator?: boolean } = {}): void {
    if (!/^[A-Z][A-Z_]*$/.test(name) || this.extraOps.has(name) || ALL_OPS.has(name)) {
      throw new KvstashError(ErrorCode.CONFIG, `cannot register op "${name}"`);
    }
    this.extraOps.set(name, handler);
    this.extraOpNames.add(name);
    if (opts.operator) this.operatorOpNames.add(name);
  }

  isOperatorOp(op: string): boolean {
    return this.operatorOpNames.has(op);
  }

  addStatsSource(source: StatsSource): void {
    const core = ['server', 'uptime_s', 'blocks', 'namespaces', 'requests', 'errors', 'by_op', 'by_code', 'tiers', 'arena'];
    if (!/^[a-z][a-z0-9_]*$/.test(source.name) || core.includes(source.name) || this.statsSources.some((s) => s.name === source.name)) {
      throw new KvstashError(ErrorCode.CONFIG, `cannot add stats source "${source.name}"`);
    }
    this.statsSources.push(source);
  }

  get endpoints(): string[] {
    return [...this.boundEndpoints];
  }

  get tierControl(): TierControl {
    return this.tiers;
  }

  get tierWrites(): TierWrites {
    return this.tiers;
  }

  addGuard(guard: RequestGuard): void {
    this.guards.push(guard);
  }

  addObserver(observer: RequestObserver): void {
    this.observers.push(observer);
  }

  publishEngineBlocks(blocks: EngineBlocks): void {
    for (const l of this.blockListeners) {
      try {
        l(blocks);
      } catch (err) {
        this.log.warn({ err }, 'engine-blocks listener failed');
      }
    }
  }

  onEngineBlocks(listener: (blocks: EngineBlocks) => void): void {
    this.blockListeners.push(listener);
  }

  addSocketSetup(setup: (router: Router) => void): void {
    this.socketSetups.push(setup);
  }

  setPrincipalResolver(resolve: PrincipalResolver): void {
    if (this.principalOf) throw new KvstashError(ErrorCode.CONFIG, 'a principal resolver is already set (two auth plugins?)');
    this.principalOf = resolve;
  }

  private guard(peer: PeerContext, op: string, ns: NamespaceDescriptor | undefined): void {
    for (const g of this.guards) g(peer, op, ns);
  }

  private observe(req: Request, t0: number, frames: Buffer[], reply: Buffer[] | undefined, code: string | undefined): void {
    for (const o of this.observers) {
      try {
        o(req, t0, frames, reply, code);
      } catch (err) {
        this.log.warn({ err }, 'request observer failed');
      }
    }
  }

  async start(): Promise<{ endpoints: string[]; rebuilt: number }> {
    // Before the tier stack opens anything: never take (unlink) the socket of a live sidecar (endpoint-probe.ts).
    await assertEndpointsFree(this.config.endpoints);
    const { rebuilt } = await this.tiers.open();
    this.nsRegistry.load();
    const idleMs = Number(this.config.namespaceIdleSeconds ?? 0) * 1000;
    if (idleMs > 0) {
      this.nsTimer = setInterval(() => this.expireNamespaces(), Math.min(60_000, Math.max(10, idleMs / 2)));
      this.nsTimer.unref();
    }
    const router = new Router({ sendHighWaterMark: 100_000, receiveHighWaterMark: 100_000, linger: 0 });
    for (const setup of this.socketSetups) setup(router);
    for (const ep of this.config.endpoints) {
      if (ep.startsWith('ipc://')) mkdirSync(path.dirname(ep.slice(6)), { recursive: true });
      await router.bind(ep);
      this.boundEndpoints.push(router.lastEndpoint ?? ep);
    }
    this.router = router;
    void this.receiveLoop(router);
    for (const p of this.plugins) await p.start(this);
    return { endpoints: this.endpoints, rebuilt };
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.nsTimer) clearInterval(this.nsTimer);
    this.nsRegistry.flush();
    for (const p of [...this.plugins].reverse()) await p.stop().catch((err) => this.log.warn({ err }, `plugin ${p.name} stop failed`));
    this.router?.close();
    // libzmq closes listeners on its own thread: return once they are gone, so a sidecar started right after
    // this one on the same endpoints does not find them live (endpoint-probe.ts). Bounded: 2 s.
    const until = Date.now() + 2000;
    for (const ep of this.boundEndpoints) {
      while (Date.now() < until && (await probeEndpoint(ep, 200)) === 'live') await new Promise((r) => setTimeout(r, 10));
    }
    this.leases.close();
    await this.tiers.close();
  }

  // ---- namespaces -------------------------------------------------------------------------------------

  /** Register (or re-register) a namespace; `keep`: a plugin's own, never expires. Throws KVS_RESOURCE_EXHAUSTED beyond the quotas. */
  registerNamespace(d: NamespaceDescriptor, keep = false): string {
    return this.nsRegistry.register(d, keep);
  }

  /** Namespaces among `ids` that hold at least one block in the index. */
  namespacesWithBlocks(ids: Set<string>): Set<string> {
    const busy = new Set<string>();
    for (const ns of ids) if (this.tiers.index.blocksIn(ns) > 0) busy.add(ns); // counted per namespace: no scan
    return busy;
  }

  /** Forget empty namespaces unused for namespaceIdleSeconds (run on a timer; tests call it). */
  expireNamespaces(now = Date.now()): string[] {
    return this.nsRegistry.sweep((ids) => this.namespacesWithBlocks(ids), now);
  }

  // ---- data path --------------------------------------------------------------------------------------

  private async receiveLoop(router: Router): Promise<void> {
    try {
      for await (const msg of router) {
        if (msg.length < 2) continue; // no identity + header: unidentifiable, drop
        const [id, ...frames] = msg as Buffer[];
        try {
          this.handle(id!, frames);
        } catch (err) {
          this.log.error({ err }, 'request handler failed');
        }
      }
    } catch (err) {
      if (!this.stopped) this.log.error({ err }, 'receive loop ended');
    }
  }

  private handle(routingId: Buffer, frames: Buffer[]): void {
    this.counters.requests++;
    const peerKey = routingId.toString('hex');
    let size = 0;
    for (const f of frames) size += f.length;
    let req: Request;
    let blocks: Buffer[];
    try {
      ({ header: req, blocks } = decodeRequest(frames, this.limits, this.extraOpNames));
    } catch (err) {
      // Anything the codec did not code itself is a header it could not read (never an undefined code).
      const e = err instanceof ProtocolError ? err : new ProtocolError(ErrorCode.BAD_HEADER, `undecodable header: ${(err as Error)?.message ?? String(err)}`, undefined);
      this.replyError(routingId, e.requestId, e.code, e.message);
      return;
    }
    // A GET's cost includes the reply it will produce, so pipelined GETs from slow tiers are bounded too.
    let getKeys: string[] | undefined;
    if (req.op === 'GET') {
      getKeys = storageKeys(req.ns, req.keys);
      for (const k of getKeys) size += this.tiers.entry(k)?.size ?? 0;
    }
    const held = this.inflight.get(peerKey) ?? 0;
    if (held > 0 && held + size > this.limits.maxInflightBytes) {
      this.replyError(routingId, req.id, ErrorCode.BUSY, `client has ${held} bytes in flight; limit is ${this.limits.maxInflightBytes}`);
      return;
    }
    this.counters.byOp[req.op] = (this.counters.byOp[req.op] ?? 0) + 1;
    this.hold(peerKey, size);
    const t0 = this.observers.length ? performance.now() : 0;
    const done = (reply: Buffer[] | undefined, code?: string) => {
      this.hold(peerKey, -size);
      if (this.observers.length) this.observe(req, t0, frames, reply, code);
      if (reply) this.enqueue(routingId, reply, peerKey);
    };
    try {
      const peer: PeerContext = { routingId, principal: this.principalOf?.(routingId, frames) };
      const r = this.dispatch(peer, req, blocks, getKeys);
      if (r instanceof Promise) {
        r.then(done, (err) => {
          const e = toKvstashError(err);
          done(undefined, e.code);
          this.replyError(routingId, req.id, e.code, e.message);
        });
      } else {
        done(r);
      }
    } catch (err) {
      const e = toKvstashError(err);
      done(undefined, e.code);
      this.replyError(routingId, req.id, e.code, e.message);
    }
  }

  private nsOf(peer: PeerContext, op: string, ns: string): NamespaceDescriptor {
    const d = this.namespaces.get(ns);
    if (!d) throw new KvstashError(ErrorCode.NS_UNKNOWN, `namespace ${ns} is not registered; send HELLO first`);
    this.guard(peer, op, d);
    this.nsRegistry.touch(ns);
    return d;
  }

  private dispatch(peer: PeerContext, req: Request, blocks: Buffer[], getKeys?: string[]): Buffer[] | Promise<Buffer[]> {
    const plugin = this.extraOps.get(req.op);
    if (plugin) {
      this.guard(peer, req.op, undefined);
      const r = plugin(req as unknown as Record<string, unknown>, peer);
      return r instanceof Promise ? r.then((h) => encodeReply({ ...h, id: req.id })) : encodeReply({ ...r, id: req.id });
    }
    switch (req.op) {
      case 'PING':
        return encodeReply({ id: req.id, server: SERVER_VERSION });
      case 'HELLO': {
        this.guard(peer, 'HELLO', req.namespace);
        const ns = this.registerNamespace(req.namespace);
        return encodeReply({
          id: req.id, ns, server: SERVER_VERSION, protocol: PROTOCOL_VERSION, tiers: this.tiers.tiers.map((t) => t.name),
          limits: { max_message_bytes: this.limits.maxMessageBytes, max_block_bytes: this.limits.maxBlockBytes, max_inflight_bytes: this.limits.maxInflightBytes },
          ...(req.shm && this.arena ? { arena: this.arena.describe(ns) } : {}),
        });
      }
      case 'STATS':
        this.guard(peer, 'STATS', undefined);
        return encodeReply({ id: req.id, stats: this.stats() });
      case 'LOOKUP': {
        this.nsOf(peer, req.op, req.ns);
        const r = this.tiers.lookupRaw(req.ns, req.keys, req.prefetch === true);
        const reply = (x: typeof r) => {
          if (req.lease !== undefined) this.leases.apply(req.ns, req.lease, storageKeys(req.ns, req.keys.subarray(0, x.hit * KEY_BYTES)), req.lease_ms ?? 0);
          return encodeReply({ id: req.id, hit: x.hit, tiers: x.tiers, load_ms: x.loadMs, depth: x.depth });
        };
        // A miss with a shared tier (nfs, s3): ask it about blocks other hosts wrote (rate-limited; shared-probe.ts).
        if (this.tiers.probe && r.hit < req.keys.length / KEY_BYTES) return this.tiers.lookupShared(req.ns, req.keys, r, req.prefetch === true).then(reply);
        return reply(r);
      }
      case 'EXISTS': {
        this.nsOf(peer, req.op, req.ns);
        const ex = this.tiers.existsRaw(req.ns, req.keys);
        let prefix = 0;
        while (prefix < ex.length && ex[prefix]) prefix++;
        return encodeReply({ id: req.id, exists: ex, prefix });
      }
      case 'DELETE': {
        this.nsOf(peer, req.op, req.ns);
        return encodeReply({ id: req.id, deleted: this.tiers.delete(storageKeys(req.ns, req.keys)) });
      }
      case 'PUT': {
        this.nsOf(peer, req.op, req.ns);
        const keys = storageKeys(req.ns, req.keys);
        const results: number[] = new Array(keys.length);
        // In chain order (root first), as vLLM emits BlockStored: tier events reach routers parents first.
        for (let i = 0; i < keys.length; i++) {
          const sum = req.sums?.[i];
          const b = blocks[i]!;
          if (sum !== undefined && checksum(b) !== sum) {
            results[i] = PutResult.BAD_CHECKSUM;
            continue;
          }
          results[i] = this.tiers.put(keys[i]!, b, sum);
        }
        return encodeReply({ id: req.id, results });
      }
      case 'ATTACH':
        this.nsOf(peer, req.op, req.ns);
        return encodeReply({ id: req.id, ...this.needArena().attach(peer.routingId.toString('hex'), req.ns, req.token) });
      case 'RELEASE':
        return encodeReply({ id: req.id, released: this.needArena().release(peer.routingId.toString('hex'), req.leases) });
      case 'ALLOC':
        this.nsOf(peer, req.op, req.ns);
        return encodeReply({ id: req.id, ...this.needArena().alloc(peer.routingId.toString('hex'), req.ns, storageKeys(req.ns, req.keys), req.sizes) });
      case 'COMMIT':
        this.nsOf(peer, req.op, req.ns);
        return encodeReply({ id: req.id, ...this.needArena().commit(peer.routingId.toString('hex'), req.ns, req.alloc, req.written) });
      case 'GET': {
        this.nsOf(peer, req.op, req.ns);
        const keys = getKeys ?? storageKeys(req.ns, req.keys);
        const peerKey = peer.routingId.toString('hex');
        if (req.lease && this.arena?.isAttached(peerKey, req.ns)) return this.arena.get(peerKey, req.id, keys);
        const finish = (vals: (Buffer | undefined)[]): Buffer[] => {
          const sizes = Array.from(vals, (v) => (v ? v.length : -1)); // Array.from: vals may be sparse (misses are holes)
          return encodeReply({ id: req.id, sizes }, vals.filter((v): v is Buffer => v !== undefined));
        };
        // Fast path: every key in DRAM or missing everywhere → answer without awaiting.
        const resident = this.tiers.getResident(keys);
        return resident ? finish(resident) : this.tiers.get(keys).then(finish);
      }
    }
  }

  private needArena(): ArenaOps {
    if (!this.arena) throw new KvstashError(ErrorCode.ARENA, 'this sidecar has no shared-memory DRAM arena (arenaDir is empty); use inline GET/PUT');
    return this.arena;
  }

  stats(): Record<string, unknown> {
    return {
      server: SERVER_VERSION, uptime_s: Math.round((Date.now() - this.startedAt) / 1000), blocks: this.tiers.index.size,
      namespaces: this.namespaces.size, requests: this.counters.requests, errors: this.counters.errors,
      by_op: this.counters.byOp, by_code: this.counters.byCode, tiers: this.tiers.stats(),
      ...(this.arena ? { arena: this.arena.stats() } : {}),
      ...Object.fromEntries(this.statsSources.map((s) => [s.name, s.rows()])),
    };
  }

  private replyError(routingId: Buffer, id: number | undefined, code0: string, message: string): void {
    const code = isErrorCode(code0) ? code0 : ErrorCode.INTERNAL;
    this.counters.errors++;
    this.counters.byCode[code] = (this.counters.byCode[code] ?? 0) + 1;
    this.log.tr({ code, id }, message);
    this.enqueue(routingId, encodeError(id, code, message));
  }

  /** Count bytes a peer has in flight (negative to release); a peer at zero is forgotten. */
  private hold(peer: string, n: number): void {
    const v = (this.inflight.get(peer) ?? 0) + n;
    if (v > 0) this.inflight.set(peer, v);
    else this.inflight.delete(peer);
  }

  private enqueue(routingId: Buffer, frames: Buffer[], peer?: string): void {
    if (this.stopped) return;
    let bytes = 0;
    if (peer) {
      for (const f of frames) bytes += f.length;
      this.hold(peer, bytes);
    }
    this.outbox.push({ frames: [routingId, ...frames], peer, bytes });
    if (!this.sending) void this.pump();
  }

  private async pump(): Promise<void> {
    const router = this.router;
    if (!router) return;
    this.sending = true;
    try {
      while (this.outbox.length > 0 && !this.stopped) {
        const msg = this.outbox.shift()!;
        try {
          await router.send(msg.frames);
        } catch (err) {
          if (!this.stopped) this.log.warn({ err }, 'send failed');
        } finally {
          if (msg.peer) this.hold(msg.peer, -msg.bytes);
        }
      }
    } finally {
      this.sending = false;
    }
  }
}

export { KvstashError };
