/**
 * EventStream — one vLLM KV-event publisher (one endpoint = one DP rank): a SUB on the live stream and a
 * DEALER on the publisher's replay ROUTER, with per-endpoint sequence tracking. It hands decoded batches,
 * strictly in sequence order, to a sink, and tells the sink when the endpoint's state must be dropped.
 *
 * Sequence rules (seq is frame 1 of every message, per publisher, from 0 up):
 * - next expected seq → apply.
 * - seq jumps ahead (a gap: HWM drop, slow joiner) → replay from last + 1 over the DEALER (`["", seq8]`),
 *   reading `["", seq8, payload]` until the end marker seq 2^64−1, under a deadline (`replayTimeoutMs`).
 *   If the first replayed seq is higher than asked (fell out of vLLM's `buffer_steps`), or there is a hole,
 *   the state is dropped (resync) and the batches that did arrive are applied on the empty state.
 *   Replayed batches newer than the live message that revealed the gap are not applied from the replay:
 *   they are already queued on the SUB (which keeps receiving during the replay) and apply in order from there.
 * - first message ever with seq > 0 (the sidecar joined late) → replay from 0 the same way.
 * - seq goes backwards (vLLM restarted; its seqs restart at 0) → drop state, then treat it as a first message.
 * - no replay endpoint, a replay that fails or passes its deadline → drop state and continue from the live
 *   message (after a failure, no replay is tried for `replayBackoffMs`); the DEALER is recreated so late
 *   replies of an abandoned replay cannot be mistaken for the next one.
 * - an undecodable payload → drop state (its events are lost) and keep the seq; malformed frames (not
 *   3 frames, seq not 8 bytes) are counted and ignored.
 * Endpoints: the SUB connects; prefix `bind:` makes it bind instead (vLLM then connects its PUB to it).
 * Only one publisher per endpoint is supported (each DP rank has its own port in vLLM).
 */
import { Dealer, Subscriber } from 'zeromq';
import { ErrorCode, KvstashError } from '../../protocol/errors.js';
import { logger } from '../../connector/log.js';
import { decodeEventBatch, decodeSeq, encodeSeq, SEQ_END, type KvEventBatch } from '../../protocol/vllm-events.js';

export interface StreamSink {
  apply(endpoint: string, batch: KvEventBatch): void;
  drop(endpoint: string, reason: string): void;
}

export interface EventStreamOptions {
  endpoint: string;
  replayEndpoint?: string;
  /** Topic prefix to subscribe to ("" = everything). */
  topic?: string;
  /** Deadline of one whole replay exchange, ms (default 3000). */
  replayTimeoutMs?: number;
  /** After a failed replay, resync without replay for this long, ms (default 5000). */
  replayBackoffMs?: number;
  /** Most batches one replay may return (default 100000; vLLM buffers 10000 by default). */
  maxReplayBatches?: number;
}

export interface StreamStats {
  endpoint: string;
  replay_endpoint: string | null;
  /** Last applied seq as a decimal string ("" before the first). */
  last_seq: string;
  batches: number;
  gaps: number;
  replays: number;
  replay_failures: number;
  resyncs: number;
  restarts: number;
  decode_errors: number;
  bad_frames: number;
  unknown_events: number;
}

export class EventStream {
  readonly endpoint: string;
  private readonly sub = new Subscriber({ receiveHighWaterMark: 100_000, linger: 0 });
  private dealer: Dealer | undefined;
  private lastSeq: bigint | undefined;
  private noReplayUntil = 0;
  private stopped = false;
  private loop: Promise<void> | undefined;
  private readonly log = logger('events');
  readonly counters = { batches: 0, gaps: 0, replays: 0, replay_failures: 0, resyncs: 0, restarts: 0, decode_errors: 0, bad_frames: 0, unknown_events: 0 };

  constructor(private readonly opts: EventStreamOptions, private readonly sink: StreamSink) {
    this.endpoint = opts.endpoint;
  }

  async start(): Promise<void> {
    const ep = this.endpoint;
    if (ep.startsWith('bind:')) await this.sub.bind(ep.slice(5));
    else this.sub.connect(ep);
    this.sub.subscribe(this.opts.topic ?? '');
    this.loop = this.receiveLoop();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.sub.close();
    this.dealer?.close();
    await this.loop;
  }

  stats(): StreamStats {
    return { endpoint: this.endpoint, replay_endpoint: this.opts.replayEndpoint ?? null, last_seq: this.lastSeq === undefined ? '' : String(this.lastSeq), ...this.counters };
  }

  private async receiveLoop(): Promise<void> {
    try {
      for await (const frames of this.sub) {
        const seq = frames.length === 3 ? decodeSeq(frames[1]!) : undefined;
        if (seq === undefined) {
          this.counters.bad_frames++;
          continue;
        }
        try {
          await this.onLive(seq, frames[2]!);
        } catch (err) {
          this.log.error({ err, endpoint: this.endpoint }, 'KV event handling failed');
        }
      }
    } catch (err) {
      if (!this.stopped) this.log.error({ err, endpoint: this.endpoint }, 'KV event subscriber ended');
    }
  }

  private async onLive(seq: bigint, payload: Buffer): Promise<void> {
    const last = this.lastSeq;
    if (last !== undefined && seq === last + 1n) return this.applyPayload(seq, payload);
    if (last !== undefined && seq <= last) {
      this.counters.restarts++;
      this.log.tr({ endpoint: this.endpoint, seq: String(seq), last: String(last) }, 'publisher restarted: dropping its state');
      this.resync('publisher restarted', false);
      this.lastSeq = undefined;
    }
    if (this.lastSeq === undefined && seq === 0n) return this.applyPayload(seq, payload);
    const from = this.lastSeq === undefined ? 0n : this.lastSeq + 1n;
    if (this.lastSeq !== undefined) this.counters.gaps++;
    await this.catchUp(from, seq, payload);
  }

  /** Fill seqs [from, liveSeq) by replay, then apply the live message. */
  private async catchUp(from: bigint, liveSeq: bigint, livePayload: Buffer): Promise<void> {
    if (!this.opts.replayEndpoint || Date.now() < this.noReplayUntil) {
      if (this.lastSeq !== undefined) this.resync(`gap before seq ${liveSeq} and no replay`);
      return this.applyPayload(liveSeq, livePayload);
    }
    this.counters.replays++;
    let got: [bigint, Buffer][];
    try {
      got = await this.replay(from);
    } catch (err) {
      this.counters.replay_failures++;
      this.noReplayUntil = Date.now() + (this.opts.replayBackoffMs ?? 5000);
      this.log.warn({ endpoint: this.endpoint, replay: this.opts.replayEndpoint, err: (err as Error).message }, 'KV event replay failed: resynchronizing');
      this.resync('replay failed');
      return this.applyPayload(liveSeq, livePayload);
    }
    let expected = from;
    for (const [s, p] of got) {
      if (s < expected || s > liveSeq) continue;
      if (s > expected) this.resync(`replay from ${expected} started at ${s}`, this.lastSeq !== undefined);
      this.applyPayload(s, p);
      expected = s + 1n;
    }
    if (liveSeq < expected) return; // the replay carried the live batch too
    if (liveSeq > expected) this.resync(`replay ended at ${expected - 1n}, live is at ${liveSeq}`);
    this.applyPayload(liveSeq, livePayload);
  }

  private resync(reason: string, count = true): void {
    if (count) this.counters.resyncs++;
    this.log.tr({ endpoint: this.endpoint, reason }, 'dropping engine state');
    this.sink.drop(this.endpoint, reason);
  }

  private applyPayload(seq: bigint, payload: Buffer): void {
    this.lastSeq = seq;
    let batch: KvEventBatch;
    try {
      batch = decodeEventBatch(payload, { onUnknown: () => void this.counters.unknown_events++ });
    } catch (err) {
      this.counters.decode_errors++;
      this.log.warn({ endpoint: this.endpoint, seq: String(seq), err: (err as Error).message }, 'undecodable KV event batch: dropping engine state');
      this.sink.drop(this.endpoint, 'undecodable batch');
      return;
    }
    this.counters.batches++;
    this.sink.apply(this.endpoint, batch);
  }

  /** One replay exchange: every buffered batch with seq ≥ from, in order, until the end marker. */
  private async replay(from: bigint): Promise<[bigint, Buffer][]> {
    const deadline = Date.now() + (this.opts.replayTimeoutMs ?? 3000);
    const max = this.opts.maxReplayBatches ?? 100_000;
    const remaining = () => {
      const ms = deadline - Date.now();
      if (ms <= 0) throw new KvstashError(ErrorCode.TIMEOUT, `replay from ${this.opts.replayEndpoint} did not finish within ${this.opts.replayTimeoutMs ?? 3000} ms`);
      return ms;
    };
    if (!this.dealer) {
      this.dealer = new Dealer({ linger: 0, receiveHighWaterMark: 0 });
      this.dealer.connect(this.opts.replayEndpoint!);
    }
    const d = this.dealer;
    const out: [bigint, Buffer][] = [];
    try {
      d.sendTimeout = remaining();
      await d.send([Buffer.alloc(0), encodeSeq(from)]);
      for (;;) {
        d.receiveTimeout = remaining();
        const msg = await d.receive();
        const s = msg.length === 3 && msg[0]!.length === 0 ? decodeSeq(msg[1]!) : undefined;
        if (s === undefined) {
          this.counters.bad_frames++;
          continue;
        }
        if (s === SEQ_END) return out;
        out.push([s, msg[2]!]);
        if (out.length > max) throw new KvstashError(ErrorCode.RESOURCE_EXHAUSTED, `replay returned more than ${max} batches`);
      }
    } catch (err) {
      d.close();
      this.dealer = undefined;
      if ((err as { code?: string }).code === 'EAGAIN') throw new KvstashError(ErrorCode.TIMEOUT, `replay from ${this.opts.replayEndpoint} did not finish within ${this.opts.replayTimeoutMs ?? 3000} ms`, { cause: err });
      throw err;
    }
  }
}
