/**
 * One `lm://` client connection: parse requests (frame-parser.ts), serve them in order against the LmStore,
 * write each reply — header and payload — as one write.
 *
 * - TCP_NODELAY is set and every reply goes out in a single write: a concatenated buffer below
 *   `concatBelow` bytes, cork + two writes + uncork (one writev) above it (bench/lmcache.ts measures both).
 *   LMCache's client reads a reply header with one recv(), so the header is never split from its write.
 * - Requests are served strictly in order. While a GET waits for a lower tier, reading pauses; reading also
 *   pauses while the socket's send buffer is full (backpressure), never buffering unbounded replies.
 * - Deadlines per request, counted from its first byte and never restarted by later bytes (issue 9 item 1): a
 *   header must be complete within `stallMs` (a client of a shorter header generation waiting for a reply;
 *   LMCache writes each header in one send), a whole request, header and payload, within `requestMs`. While
 *   this side pauses reading (a GET waiting for a tier, a full send buffer) the clock restarts on resume.
 * - A header that cannot be decoded (KVS_BAD_HEADER) or a missed deadline (KVS_TIMEOUT) is logged with its
 *   code, generation, offset and first bytes; requests before it are still served, then the connection is
 *   closed. Other connections are not affected.
 * - PUT payload memory is charged to the server's LmMemoryBudget as it arrives and released when the PUT is
 *   stored or refused, or when the connection closes (memory-budget.ts: refusals are counted there, `refusedPuts`).
 */
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import { ErrorCode } from '../../protocol/errors.js';
import { PutResult } from '../../protocol/wire.js';
import { LmFrameParser, type LmFrame } from './frame-parser.js';
import type { LmMemoryBudget } from './memory-budget.js';
import {
  Command, encodeReplyHeader, LAYOUTS, LmProtocolError, NO_META, ReturnCode, wireOf, ZERO_META,
  type Generation, type LmListenSetting, type LmMeta, type ReplyHeader, type ReplyOrder,
} from './protocol.js';
import type { LmStore } from './store.js';
import { storedHeaderBytes, writeStoredHeader, type StoredObject } from './stored-value.js';

export interface ConnectionOptions {
  generation: LmListenSetting;
  maxPayloadBytes: number;
  stallMs: number;
  /** Deadline of a whole request (header and payload) from its first byte, ms. */
  requestMs: number;
  concatBelow: number;
  budget?: LmMemoryBudget;
}

export interface LmCounters {
  connections: number; requests: number; puts: number; stored: number; droppedPuts: number; gets: number; hits: number;
  misses: number; exists: number; lists: number; health: number; unknown: number; protocolErrors: number; timeouts: number;
}

export class LmConnection {
  private readonly parser: LmFrameParser;
  private readonly queue: LmFrame[] = [];
  private busy = false;
  private waitingDrain = false;
  private closing = false;
  private stallTimer: NodeJS.Timeout | undefined;
  private stallAt = 0;
  private readonly peer: string;
  private readonly order: ReplyOrder;

  constructor(private readonly socket: Socket, private readonly store: LmStore, private readonly opts: ConnectionOptions,
    private readonly log: Logger, private readonly c: LmCounters) {
    this.peer = `${socket.remoteAddress}:${socket.remotePort}`;
    const wire = wireOf(opts.generation);
    this.order = wire.replyOrder;
    this.parser = new LmFrameParser({
      generation: wire.generation, maxPayloadBytes: opts.maxPayloadBytes, payloadOffset: (h) => storedHeaderBytes(h.key), budget: opts.budget,
    });
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err) => this.log.debug({ err, peer: this.peer }, 'lm:// connection error'));
    socket.on('close', () => this.onClose());
    c.connections++;
  }

  private get gen(): Generation {
    return this.parser.generation!;
  }

  private onData(chunk: Buffer): void {
    if (this.closing) return;
    try {
      this.parser.push(chunk, (f) => this.queue.push(f));
    } catch (err) {
      this.fail(err as LmProtocolError);
    }
    this.pump();
    this.armStall();
  }

  /** Closed (by either side): release every byte this connection holds. */
  private onClose(): void {
    this.clearStall();
    this.closing = true;
    this.parser.abort();
    for (const f of this.queue.splice(0)) this.release(f);
  }

  private release(f: LmFrame): void {
    if (f.charged) this.opts.budget?.release(f.charged);
    f.charged = 0;
  }

  /** Arm the current request's deadline (header: stallMs, whole request: requestMs, from its first byte). */
  private armStall(): void {
    if (this.closing || this.busy || this.waitingDrain || !this.parser.midFrame) {
      this.clearStall();
      return;
    }
    const header = this.parser.midHeader;
    const at = this.parser.requestStartedAt + (header ? this.opts.stallMs : this.opts.requestMs);
    if (this.stallTimer && at === this.stallAt) return;
    this.clearStall();
    this.stallAt = at;
    this.stallTimer = setTimeout(() => {
      const gen = this.parser.generation;
      const msg = header
        ? `header incomplete ${this.opts.stallMs} ms after its first byte, at byte ${this.parser.offset} (a client of a shorter header generation than ${gen ?? 'sniffed'}, or a slow sender?)`
        : `request incomplete ${this.opts.requestMs} ms after its first byte, at byte ${this.parser.offset} (a slow or stalled sender)`;
      this.c.timeouts++;
      this.fail(new LmProtocolError(ErrorCode.TIMEOUT, msg, gen, Buffer.alloc(0)));
      this.parser.abort();
      this.pump();
    }, Math.max(0, at - Date.now()));
    this.stallTimer.unref();
  }

  private clearStall(): void {
    if (this.stallTimer) clearTimeout(this.stallTimer);
    this.stallTimer = undefined;
  }

  private fail(err: LmProtocolError): void {
    if (this.closing) return;
    this.closing = true;
    this.c.protocolErrors++;
    this.socket.pause();
    this.log.error({
      code: err.code ?? ErrorCode.BAD_HEADER, peer: this.peer, generation: err.generation ?? this.parser.generation, offset: this.parser.offset,
      head: err.head?.subarray(0, 48).toString('hex'),
    }, `lm:// ${err.message}; closing the connection`);
  }

  private pump(): void {
    while (!this.busy && !this.waitingDrain && this.queue.length > 0) {
      const f = this.queue.shift()!;
      let r: void | Promise<void>;
      try {
        r = this.handle(f);
      } catch (err) {
        this.fail(new LmProtocolError(ErrorCode.INTERNAL, `request failed: ${(err as Error).message}`, this.parser.generation, Buffer.alloc(0)));
        for (const q of this.queue.splice(0)) this.release(q);
        break;
      }
      if (r) {
        this.busy = true;
        this.socket.pause();
        r.catch((err) => this.log.error({ err }, 'lm:// request failed')).finally(() => {
          this.busy = false;
          this.resume();
        });
        return;
      }
    }
    if (this.closing && !this.busy && this.queue.length === 0 && !this.socket.destroyed) {
      this.socket.end();
      setTimeout(() => this.socket.destroy(), 1000).unref();
    }
  }

  private resume(): void {
    if (this.busy || this.waitingDrain) return;
    // Time spent paused by this side is not the sender's: a partial request's clock restarts.
    if (this.parser.requestStartedAt) this.parser.requestStartedAt = Date.now();
    if (!this.closing) this.socket.resume();
    this.pump();
    this.armStall();
  }

  private handle(f: LmFrame): void | Promise<void> {
    const h = f.header;
    this.c.requests++;
    switch (h.command) {
      case Command.PUT: {
        this.c.puts++;
        if (!f.payload) {
          this.c.droppedPuts++;
          if (f.refused) {
            this.log.warn({ code: ErrorCode.RESOURCE_EXHAUSTED, key: h.key, length: h.length, buffered: this.opts.budget?.used, cap: this.opts.budget?.capBytes }, 'lm:// PUT refused: the server\'s buffered-bytes cap is reached; payload skipped, not stored');
          } else {
            this.log.warn({ code: ErrorCode.TOO_LARGE, key: h.key, length: h.length, limit: this.opts.maxPayloadBytes }, 'lm:// PUT over the block size limit: payload skipped, not stored');
          }
          return;
        }
        const meta: LmMeta = this.gen === 'legacy' ? ZERO_META : h;
        writeStoredHeader(f.payload, this.gen, h.key, meta);
        this.release(f);
        const r = this.store.put(this.gen, h.key, f.payload);
        if (r === PutResult.STORED) this.c.stored++;
        else if (r === PutResult.DROPPED) this.c.droppedPuts++;
        return;
      }
      case Command.GET: {
        this.c.gets++;
        const r = this.store.get(this.gen, h.key);
        if (r instanceof Promise) return r.then((o) => this.replyObject(o));
        this.replyObject(r);
        return;
      }
      case Command.EXIST:
        this.c.exists++;
        this.reply(this.store.exists(this.gen, h.key) ? ReturnCode.SUCCESS : ReturnCode.FAIL);
        return;
      case Command.LIST: {
        this.c.lists++;
        const body = Buffer.from(this.store.list(this.gen).join('\n'), 'utf8');
        this.send({ code: ReturnCode.SUCCESS, length: body.length, ...NO_META }, body);
        return;
      }
      case Command.HEALTH:
        this.c.health++;
        this.reply(ReturnCode.SUCCESS);
        return;
      default:
        this.c.unknown++;
        this.log.warn({ code: ErrorCode.UNKNOWN_OP, command: h.command, peer: this.peer }, 'lm:// unknown command ignored (no reply), as LMCache servers do');
    }
  }

  private replyObject(o: StoredObject | undefined): void {
    if (!o) {
      this.c.misses++;
      this.reply(ReturnCode.FAIL);
      return;
    }
    this.c.hits++;
    this.send({ code: ReturnCode.SUCCESS, length: o.payload.length, ...o.meta }, o.payload);
  }

  private reply(code: number): void {
    this.send({ code, length: 0, ...NO_META });
  }

  /** Header and payload in one write. */
  private send(r: ReplyHeader, payload?: Buffer): void {
    if (this.socket.destroyed) return;
    const hb = LAYOUTS[this.gen].replyHeaderBytes;
    let ok: boolean;
    if (!payload || payload.length === 0) {
      ok = this.socket.write(encodeReplyHeader(this.gen, r, undefined, 0, this.order));
    } else if (payload.length < this.opts.concatBelow) {
      const b = Buffer.allocUnsafe(hb + payload.length);
      encodeReplyHeader(this.gen, r, b, 0, this.order);
      payload.copy(b, hb);
      ok = this.socket.write(b);
    } else {
      this.socket.cork();
      this.socket.write(encodeReplyHeader(this.gen, r, undefined, 0, this.order));
      ok = this.socket.write(payload);
      this.socket.uncork();
    }
    if (!ok && !this.waitingDrain) {
      this.waitingDrain = true;
      this.socket.pause();
      this.socket.once('drain', () => {
        this.waitingDrain = false;
        this.resume();
      });
    }
  }
}
