/**
 * TierEventsPublisher — republishes the tier stack's stored/removed events as vLLM KV events, so routers that
 * already consume vLLM's `ZmqEventPublisher` see which prefixes the sidecar holds, and in which medium.
 *
 * Same socket semantics as vLLM (docs/engine-interfaces.md §3.3–3.4), with the sidecar always binding:
 * - PUB: 3 frames [topic, seq u64 BE, payload]; seq starts at 0 when the sidecar starts, +1 per batch.
 *   Topic = `eventsTopic` + the 32-hex namespace id, so a subscriber can filter by namespace or take all.
 * - ROUTER replay: a DEALER sends ["", seq8]; every buffered batch with seq ≥ it comes back as ["", seq8, payload]
 *   (no topic), then ["", ff×8, ""]. Anything else is dropped unanswered and counted.
 * - Payload: vLLM's KVEventBatch via protocol/vllm-events.ts `encodeEventBatch` (encoding configurable).
 *   BlockStored{block_hashes, parent_block_hash: null, token_ids: [], block_size: 0, medium} and
 *   BlockRemoved{block_hashes, medium}; medium is the tier's (CPU, DISK, NFS, S3, or a driver's own name).
 * - Hashes are kvstash canonical block hashes (connector/keys.ts), not vLLM's, in vLLM's int form: the last 8
 *   bytes of the 32-byte hash as a big-endian uint64 — unless the engine's connector stored blocks under vLLM's
 *   own hashes. The sidecar never sees token ids, so token_ids is empty and block_size 0.
 * - Events of one event-loop turn are batched per namespace (at most `maxHashesPerEvent` hashes per event).
 *   The outgoing queue is bounded (bufferSteps); when the PUB cannot keep up batches are dropped and counted.
 * - With auth on, both sockets are CURVE servers whose ZAP domain admits only principals with tenants "*".
 */
import { Publisher, Router } from 'zeromq';
import { encodeEventBatch, encodeSeq, decodeSeq, SEQ_END, type EventEncoding, type KvEvent } from '../../protocol/vllm-events.js';
import { ErrorCode, KvstashError } from '../../protocol/errors.js';
import { logger } from '../log.js';
import type { PluginHost, SidecarPlugin } from '../server/sidecar.js';
import { curvePublicOf, type AccessPolicy } from './auth.js';
import { registerZapDomain, unregisterZapDomain } from './zap.js';

export interface TierEventsOptions {
  pub?: string;
  replay?: string;
  topic: string;
  encoding: EventEncoding;
  bufferSteps: number;
  maxHashesPerEvent?: number;
  /** With a policy that is enabled: CURVE server with this secret key, ZAP admitting only "*" principals. */
  auth?: { policy: AccessPolicy; curveSecretKey?: string };
}

type TierEv = { key: string; tier: string; medium: string };

export class TierEventsPublisher implements SidecarPlugin {
  readonly name = 'tier-events';
  readonly counters = { batches: 0, events: 0, dropped: 0, replayRequests: 0, replayInvalid: 0 };
  /** Bound endpoints after start (tcp port 0 resolved). */
  pubEndpoint = '';
  replayEndpoint = '';
  private seq = 0n;
  private pub: Publisher | undefined;
  private router: Router | undefined;
  private readonly ring: { seq: bigint; payload: Buffer }[] = [];
  private readonly outbox: Buffer[][] = [];
  private sending = false;
  private readonly pending = new Map<string, KvEvent[]>();
  private scheduled = false;
  private zapDomain: string | undefined;
  private sidecar: PluginHost | undefined;
  private readonly log = logger('events');
  private readonly onStored = (ev: TierEv) => this.add('BlockStored', ev);
  private readonly onRemoved = (ev: TierEv) => this.add('BlockRemoved', ev);

  constructor(private readonly opts: TierEventsOptions) {
    if (!opts.pub && !opts.replay) throw new KvstashError(ErrorCode.CONFIG, 'tier events need eventsPub and/or eventsReplay');
    if (opts.auth?.policy.enabled && !opts.auth.curveSecretKey) {
      throw new KvstashError(ErrorCode.CONFIG, 'with auth on, eventsPub/eventsReplay need curveSecretKey: tier events carry every tenant\'s block hashes');
    }
  }

  private secure(s: Publisher | Router): void {
    const a = this.opts.auth;
    if (!a?.policy.enabled || !a.curveSecretKey) return;
    s.curveServer = true;
    s.curveSecretKey = a.curveSecretKey;
    s.curvePublicKey = curvePublicOf(a.curveSecretKey);
    s.zapDomain = this.zapDomain!;
    s.zapEnforceDomain = true;
  }

  async start(sidecar: PluginHost): Promise<void> {
    this.sidecar = sidecar;
    const policy = this.opts.auth?.policy;
    if (policy?.enabled) this.zapDomain = await registerZapDomain((key) => (policy.byCurveKey(key)?.tenants === '*' ? key : undefined), 'kvstash-events');
    if (this.opts.pub) {
      this.pub = new Publisher({ sendHighWaterMark: 100_000, linger: 0 });
      this.secure(this.pub);
      await this.pub.bind(this.opts.pub);
      this.pubEndpoint = this.pub.lastEndpoint ?? this.opts.pub;
    }
    if (this.opts.replay) {
      this.router = new Router({ linger: 0 });
      this.secure(this.router);
      await this.router.bind(this.opts.replay);
      this.replayEndpoint = this.router.lastEndpoint ?? this.opts.replay;
      void this.serveReplay(this.router);
    }
    sidecar.tiers.on('stored', this.onStored);
    sidecar.tiers.on('removed', this.onRemoved);
    this.log.info({ pub: this.pubEndpoint, replay: this.replayEndpoint, encoding: this.opts.encoding }, 'tier events publishing');
  }

  async stop(): Promise<void> {
    this.sidecar?.tiers.off('stored', this.onStored);
    this.sidecar?.tiers.off('removed', this.onRemoved);
    this.flush();
    this.pub?.close();
    this.router?.close();
    if (this.zapDomain) unregisterZapDomain(this.zapDomain);
  }

  private add(type: 'BlockStored' | 'BlockRemoved', ev: TierEv): void {
    const ns = ev.key.slice(0, 32);
    const hash = BigInt('0x' + ev.key.slice(-16));
    let list = this.pending.get(ns);
    if (!list) this.pending.set(ns, (list = []));
    const last = list[list.length - 1];
    if (last && last.type === type && last.medium === ev.medium && last.block_hashes.length < (this.opts.maxHashesPerEvent ?? 4096)) {
      last.block_hashes.push(hash);
    } else if (type === 'BlockStored') {
      list.push({
        type, block_hashes: [hash], parent_block_hash: null, token_ids: [], block_size: 0, lora_id: null, medium: ev.medium,
        lora_name: null, extra_keys: null, group_idx: null, kv_cache_spec_kind: null, kv_cache_spec_sliding_window: null,
      });
    } else {
      list.push({ type, block_hashes: [hash], medium: ev.medium, group_idx: null });
    }
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.flush());
    }
  }

  private flush(): void {
    this.scheduled = false;
    for (const [ns, events] of this.pending) {
      const payload = encodeEventBatch({ ts: Date.now() / 1000, events, data_parallel_rank: 0 }, { encoding: this.opts.encoding });
      const seq = this.seq++;
      this.ring.push({ seq, payload });
      if (this.ring.length > this.opts.bufferSteps) this.ring.shift();
      this.counters.batches++;
      for (const e of events) this.counters.events += (e as { block_hashes: unknown[] }).block_hashes.length;
      if (this.pub) {
        if (this.outbox.length >= this.opts.bufferSteps) {
          this.outbox.shift();
          this.counters.dropped++;
        }
        this.outbox.push([Buffer.from(this.opts.topic + ns), encodeSeq(seq), payload]);
      }
    }
    this.pending.clear();
    if (!this.sending && this.outbox.length) void this.pump();
  }

  private async pump(): Promise<void> {
    this.sending = true;
    try {
      while (this.outbox.length && this.pub && !this.pub.closed) await this.pub.send(this.outbox.shift()!);
    } catch (err) {
      if (this.pub && !this.pub.closed) this.log.warn({ err }, 'tier events: send failed');
    } finally {
      this.sending = false;
    }
  }

  private async serveReplay(router: Router): Promise<void> {
    try {
      for await (const msg of router) {
        const [id, delim, seqFrame] = msg as Buffer[];
        const start = msg.length === 3 && delim!.length === 0 ? decodeSeq(seqFrame!) : undefined;
        if (start === undefined) {
          this.counters.replayInvalid++;
          this.log.tr({ frames: msg.length }, 'tier events: invalid replay request dropped');
          continue;
        }
        this.counters.replayRequests++;
        const empty = Buffer.alloc(0);
        for (const b of this.ring.filter((x) => x.seq >= start)) await router.send([id!, empty, encodeSeq(b.seq), b.payload]);
        await router.send([id!, empty, encodeSeq(SEQ_END), empty]);
      }
    } catch (err) {
      if (!router.closed) this.log.warn({ err }, 'tier events: replay socket failed');
    }
  }
}
