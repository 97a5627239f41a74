/**
 * MetricsPlugin — Prometheus metrics (prom-client, one Registry per sidecar) on an HTTP `/metrics` endpoint.
 * The metric list with meanings is in docs/control-plane.md#metrics. Rules:
 * - Data-socket requests are observed through an observer (`host.addObserver`, one call per answered request); tier, pin and
 *   publisher figures are read from their owners at scrape time (no work on the data path for them).
 * - Label cardinality is bounded: `op`/`method`/`code`/`tier` take few values; per-namespace series exist for at
 *   most `topNamespaces` namespaces (slots go to the busiest namespaces at each scrape and stay assigned, so
 *   counters stay monotonic); all others are summed under namespace="other".
 * - Open doors (issue 9 item 8): `authorize` decides who may scrape (401 otherwise; settings metricsToken /
 *   metricsOpen, see cli.ts); per-namespace series carry `model` and `tenant` labels only with `tenantLabels`
 *   (default: off when auth is on — tenant and model names are not for every scraper).
 */
import { createServer, type Server } from 'node:http';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { unpackHeader } from '../../protocol/codec.js';
import { ErrorCode, KvstashError } from '../../protocol/errors.js';
import type { Request } from '../../protocol/wire.js';
import { logger } from '../log.js';
import type { PluginHost, SidecarPlugin } from '../server/sidecar.js';
import { OpStats } from './op-stats.js';
import type { TierEventsPublisher } from './tier-events-publisher.js';

export interface MetricsOptions {
  /** host:port of the HTTP listener; port 0 picks a free one (see `address` after start). */
  address: string;
  topNamespaces: number;
  events?: TierEventsPublisher;
  /** Label per-namespace series with model and tenant names. Default true. */
  tenantLabels?: boolean;
  /** Given the request's Authorization header: may it scrape? Default: everyone. */
  authorize?: (authorization: string | undefined) => boolean;
}

const sum = (fs: Buffer[]) => { let n = 0; for (const f of fs) n += f.length; return n; };

export class MetricsPlugin implements SidecarPlugin {
  readonly name = 'metrics';
  readonly registry = new Registry();
  address = '';
  private http: Server | undefined;
  private sidecar: PluginHost | undefined;
  private readonly nsCounts = new Map<string, { hits: number; misses: number }>();
  private readonly slots = new Set<string>();
  private readonly log = logger('metrics');
  private readonly ops = new OpStats([0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5]);
  private readonly grpcCalls: Counter<'method' | 'code'>;
  private readonly grpcLatency: Histogram<'method'>;
  readonly grpcStreamDropped: Counter<'method'>;
  /** Scrapes refused for lack of credentials. */
  refused = 0;

  constructor(private readonly opts: MetricsOptions) {
    const registers = [this.registry];
    // Process and Node runtime metrics under their standard names (process_cpu_seconds_total, process_resident_memory_bytes,
    // nodejs_eventloop_lag_seconds, nodejs_heap_size_used_bytes, nodejs_gc_duration_seconds, …), as Node dashboards expect.
    collectDefaultMetrics({ register: this.registry });
    const s = this as MetricsPlugin;
    this.ops.register(this.registry, {
      requests: 'kvstash_requests_total', duration: 'kvstash_request_duration_seconds', received: 'kvstash_received_bytes_total', sent: 'kvstash_sent_bytes_total',
    }, {
      requests: 'Data-socket requests answered, by op and result code (OK or KVS_*).',
      duration: 'Data-socket request latency, decode to reply queued, by op.',
      received: 'Request bytes received on the data socket (header + block frames), by op.',
      sent: 'Reply bytes sent on the data socket (header + block frames), by op.',
    });
    this.grpcCalls = new Counter({ name: 'kvstash_grpc_requests_total', help: 'Control-plane gRPC calls, by method and result code.', labelNames: ['method', 'code'], registers });
    this.grpcLatency = new Histogram({ name: 'kvstash_grpc_request_duration_seconds', help: 'Control-plane gRPC call duration (streams: until the handler finishes), by method.', labelNames: ['method'], registers, buckets: [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30] });
    this.grpcStreamDropped = new Counter({ name: 'kvstash_grpc_stream_dropped_total', help: 'Messages dropped for slow gRPC stream consumers, by method.', labelNames: ['method'], registers });

    const tierGauge = (name: string, help: string, pick: (t: ReturnType<PluginHost['tiers']['stats']>[number]) => number) =>
      new Gauge({ name, help, labelNames: ['tier', 'medium'], registers, collect() { s.forTiers(this, pick); } });
    const tierCounter = (name: string, help: string, pick: (t: ReturnType<PluginHost['tiers']['stats']>[number]) => number) =>
      new Counter({ name, help, labelNames: ['tier', 'medium'], registers, collect() { this.reset(); s.forTiers(this, pick); } });
    tierGauge('kvstash_tier_bytes', 'Bytes held by the tier.', (t) => t.bytes);
    tierGauge('kvstash_tier_budget_bytes', 'Byte budget of the tier.', (t) => t.budgetBytes);
    tierGauge('kvstash_tier_blocks', 'Blocks held by the tier.', (t) => t.blocks);
    tierGauge('kvstash_tier_write_queue_depth', 'Write-behind jobs queued or running for the tier.', (t) => t.queueDepth);
    tierGauge('kvstash_tier_degraded', 'The tier\'s last write failed (disk full, I/O error); 0 again once a write lands.', (t) => (t.degraded !== undefined ? 1 : 0));
    tierGauge('kvstash_tier_read_bytes_per_second', 'Measured read bandwidth of the tier (moving average).', (t) => t.readBps);
    new Gauge({
      name: 'kvstash_tier_driver_stat', help: 'The tier driver\'s own counters (stats()), e.g. orphansSwept, misplaced, tornTails, compactions.',
      labelNames: ['tier', 'stat'], registers,
      collect() {
        this.reset();
        for (const t of s.sidecar?.tiers.tiers.slice(1) ?? []) for (const [k, v] of Object.entries(t.driver.stats())) if (Number.isFinite(v)) this.set({ tier: t.name, stat: k }, v);
      },
    });
    tierCounter('kvstash_tier_hits_total', 'Block reads served by the tier.', (t) => t.hits);
    tierCounter('kvstash_tier_misses_total', 'Block reads the tier could not serve.', (t) => t.misses);
    tierCounter('kvstash_tier_evictions_total', 'Blocks evicted from the tier (budget or Evict).', (t) => t.evictions);
    tierCounter('kvstash_tier_dropped_saves_total', 'Saves dropped because the tier\'s write-behind queue was full.', (t) => t.droppedSaves);
    tierCounter('kvstash_tier_checksum_failures_total', 'Copies in the tier that failed their checksum (quarantined).', (t) => t.checksumFailures);
    tierCounter('kvstash_tier_promotions_total', 'Blocks promoted from the tier into DRAM.', (t) => t.promotions);
    tierCounter('kvstash_tier_demotions_total', 'Blocks demoted out of the tier.', (t) => t.demotions);
    tierCounter('kvstash_tier_write_errors_total', 'Failed writes to the tier.', (t) => t.writeErrors);
    tierCounter('kvstash_tier_written_bytes_total', 'Bytes written to the tier.', (t) => t.bytesWritten);

    new Gauge({ name: 'kvstash_blocks', help: 'Blocks in the index (any tier).', registers, collect() { this.set(s.sidecar?.tiers.index.size ?? 0); } });
    new Gauge({ name: 'kvstash_namespaces', help: 'Registered namespaces.', registers, collect() { this.set(s.sidecar?.namespaces.size ?? 0); } });
    const pin = (name: string, help: string, pick: (p: { blocks: number; bytes: number; budgetBytes: number }) => number) =>
      new Gauge({ name, help, registers, collect() { const p = s.sidecar?.tiers.pinStats(); if (p) this.set(Number.isFinite(pick(p)) ? pick(p) : -1); } });
    pin('kvstash_pinned_blocks', 'Distinct pinned blocks.', (p) => p.blocks);
    pin('kvstash_pinned_bytes', 'Bytes of distinct pinned blocks.', (p) => p.bytes);
    pin('kvstash_pin_budget_bytes', 'Pin budget in bytes (-1: unbounded).', (p) => p.budgetBytes);
    new Counter({
      name: 'kvstash_errors_total', help: 'Error replies on the data socket by code (including undecodable requests).', labelNames: ['code'], registers,
      collect() { this.reset(); for (const [c, n] of Object.entries(s.sidecar?.counters.byCode ?? {})) this.inc({ code: c }, n); },
    });
    const nsLabels = opts.tenantLabels === false ? ['namespace'] : ['namespace', 'model', 'tenant'];
    const nsCounter = (name: string, help: string, pick: (c: { hits: number; misses: number }) => number) => new Counter({
      name, help, labelNames: nsLabels, registers,
      collect() { this.reset(); for (const [labels, c] of s.namespaceRows()) this.inc(labels, pick(c)); },
    });
    nsCounter('kvstash_namespace_hit_blocks_total', 'Blocks found by LOOKUP (leading hits) and GET, per namespace (top N, rest as "other").', (c) => c.hits);
    nsCounter('kvstash_namespace_miss_blocks_total', 'Blocks asked for by LOOKUP and GET but not found, per namespace (top N, rest as "other").', (c) => c.misses);
    const ev = (name: string, help: string, pick: (c: TierEventsPublisher['counters']) => number) =>
      new Counter({ name, help, registers, collect() { this.reset(); if (s.opts.events) this.inc(pick(s.opts.events.counters)); } });
    ev('kvstash_tier_events_batches_total', 'KV-event batches published.', (c) => c.batches);
    ev('kvstash_tier_events_blocks_total', 'Block hashes published in KV events.', (c) => c.events);
    ev('kvstash_tier_events_dropped_total', 'KV-event batches dropped because the PUB socket fell behind.', (c) => c.dropped);
  }

  private forTiers(m: Gauge<'tier' | 'medium'> | Counter<'tier' | 'medium'>, pick: (t: ReturnType<PluginHost['tiers']['stats']>[number]) => number): void {
    for (const t of this.sidecar?.tiers.stats() ?? []) {
      const v = pick(t);
      if ('set' in m) m.set({ tier: t.name, medium: t.medium }, v);
      else m.inc({ tier: t.name, medium: t.medium }, v);
    }
  }

  /** Per-namespace rows, bounded: sticky slots for the busiest namespaces, the rest summed as "other". */
  private namespaceRows(): [Record<string, string>, { hits: number; misses: number }][] {
    const byHits = [...this.nsCounts].sort((a, b) => b[1].hits + b[1].misses - (a[1].hits + a[1].misses));
    for (const [ns] of byHits) {
      if (this.slots.size >= this.opts.topNamespaces) break;
      this.slots.add(ns);
    }
    const other = { hits: 0, misses: 0 };
    const rows: [Record<string, string>, { hits: number; misses: number }][] = [];
    for (const [ns, c] of this.nsCounts) {
      if (this.slots.has(ns)) {
        const d = this.opts.tenantLabels === false ? undefined : this.sidecar?.namespaces.get(ns);
        rows.push([this.opts.tenantLabels === false ? { namespace: ns } : { namespace: ns, model: d?.model ?? '', tenant: d?.tenant ?? '' }, c]);
      } else {
        other.hits += c.hits;
        other.misses += c.misses;
      }
    }
    if (this.nsCounts.size > this.slots.size) rows.push([this.opts.tenantLabels === false ? { namespace: 'other' } : { namespace: 'other', model: '', tenant: '' }, other]);
    return rows;
  }

  /** Hook for the control service (grpc-server.ts onCall). */
  recordGrpc(method: string, seconds: number, code: string): void {
    this.grpcCalls.inc({ method, code });
    this.grpcLatency.observe({ method }, seconds);
  }

  attach(sidecar: PluginHost): void {
    this.sidecar = sidecar;
    sidecar.addObserver((req, t0, frames, reply, code) => this.observe(req, t0, frames, reply, code));
  }

  private observe(req: Request, t0: number, frames: Buffer[], reply: Buffer[] | undefined, code: string | undefined): void {
    const op = req.op;
    this.ops.record(op, (performance.now() - t0) / 1000, sum(frames), reply ? sum(reply) : 0, code);
    if (!reply || (op !== 'LOOKUP' && op !== 'GET')) return;
    const n = req.keys.length / 32;
    let hits = 0;
    try {
      const h = unpackHeader(reply[0]!) as { hit?: number; sizes?: number[] };
      hits = op === 'LOOKUP' ? (h.hit ?? 0) : (h.sizes ?? []).filter((x) => x >= 0).length;
    } catch {
      return;
    }
    let c = this.nsCounts.get(req.ns);
    if (!c) this.nsCounts.set(req.ns, (c = { hits: 0, misses: 0 }));
    c.hits += hits;
    c.misses += n - hits;
  }

  /** Counters and gauges of the plugins' stats sources (PluginHost.addStatsSource), one series per row. */
  private registerSources(): void {
    const registers = [this.registry];
    for (const src of this.sidecar?.statsSources ?? []) {
      const read = (name: string) => src.rows().flatMap((r) => (typeof r.values[name] === 'number' ? [[r.instance, r.values[name]] as const] : []));
      for (const c of src.counters) {
        new Counter({ name: `kvstash_${src.name}_${c}_total`, help: `${src.name}: ${c} (plugin stats source).`, labelNames: ['instance'], registers, collect() { this.reset(); for (const [instance, v] of read(c)) this.inc({ instance }, v); } });
      }
      for (const g of src.gauges) {
        new Gauge({ name: `kvstash_${src.name}_${g}`, help: `${src.name}: ${g} (plugin stats source).`, labelNames: ['instance'], registers, collect() { this.reset(); for (const [instance, v] of read(g)) this.set({ instance }, v); } });
      }
    }
  }

  async start(): Promise<void> {
    this.registerSources();
    const i = this.opts.address.lastIndexOf(':');
    const host = this.opts.address.slice(0, i).replace(/^\[|\]$/g, '');
    const port = Number(this.opts.address.slice(i + 1));
    const http = createServer((req, res) => {
      if (this.opts.authorize && !this.opts.authorize(req.headers.authorization)) {
        this.refused++;
        res.writeHead(401, { 'content-type': 'text/plain', 'www-authenticate': 'Bearer realm="kvstash metrics"' });
        res.end('kvstash: /metrics needs "Authorization: Bearer <token>" (metricsToken, or an operator token when auth is on)\n');
      } else if (req.method === 'GET' && (req.url === '/metrics' || req.url?.startsWith('/metrics?'))) {
        this.registry.metrics().then((body) => {
          res.writeHead(200, { 'content-type': this.registry.contentType });
          res.end(body);
        }, (err) => { res.writeHead(500); res.end(String(err)); });
      } else {
        res.writeHead(404, { 'content-type': 'text/plain' });
        res.end('kvstash: metrics are at /metrics\n');
      }
    });
    await new Promise<void>((resolve, reject) => {
      http.once('error', (err) => reject(new KvstashError(ErrorCode.CONFIG, `metrics cannot listen on ${this.opts.address}: ${err.message}`, { cause: err })));
      http.listen(port, host, () => resolve());
    });
    this.http = http;
    const a = http.address();
    this.address = typeof a === 'object' && a ? `${host.includes(':') ? `[${host}]` : host}:${a.port}` : this.opts.address;
    this.log.info({ address: this.address }, 'metrics listening on /metrics');
  }

  async stop(): Promise<void> {
    const http = this.http;
    this.http = undefined;
    if (http) await new Promise<void>((resolve) => { http.close(() => resolve()); http.closeAllConnections(); });
  }
}
