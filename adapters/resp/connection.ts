/**
 * One RESP client connection: parse (codec.ts), execute in order (commands.ts), write replies.
 *
 * - Pipelining: all replies produced while one socket chunk is parsed are batched and written at once (output.ts:
 *   small pieces and DRAM-arena values copied into a shared output slab, large heap values as they are, one
 *   write or one corked writev per batch).
 * - Order: commands run strictly in order. When one needs a lower tier (a promise), reading pauses and later
 *   commands wait in a queue (at most what one chunk held) until its reply is written.
 * - Backpressure: when the socket's unsent bytes pass `highWaterBytes` (a client that pipelines GETs and does
 *   not read), reading pauses until the socket drains. Replies are never buffered without bound.
 * - Bad input: a protocol error (codec.ts limits, the global byte cap) answers `-ERR Protocol error: …` and
 *   closes the connection, as Redis does; a request left incomplete with no new bytes for `stallMs` (a slow or
 *   stuck sender holding buffered bytes) is closed without a reply. Other connections are not affected; the
 *   parser's budget charge is returned on close.
 */
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import { ByteBudget, error, RespParser, RespProtocolError, type ParserLimits, type Reply } from './codec.js';
import { execute, type CommandContext, type Session } from './commands.js';
import { Output } from './output.js';

/** Write the batch once it holds this many bytes (a long pipeline of large GETs). */
const FLUSH_AT = 4 * 1024 * 1024;

export interface ConnectionOptions {
  limits: ParserLimits;
  budget: ByteBudget;
  stallMs: number;
  highWaterBytes: number;
}

export class RespConnection {
  private readonly parser: RespParser;
  private readonly queue: Buffer[][] = [];
  private busy = false;
  private waitingDrain = false;
  private closing = false;
  private stallTimer: NodeJS.Timeout | undefined;
  private readonly peer: string;
  private readonly out = new Output();

  constructor(private readonly socket: Socket, private readonly ctx: CommandContext, private readonly session: Session,
    private readonly opts: ConnectionOptions, private readonly log: Logger, private readonly onProtocolError: () => void) {
    this.peer = `${socket.remoteAddress}:${socket.remotePort}`;
    this.parser = new RespParser(opts.limits, opts.budget);
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err) => this.log.debug({ err, peer: this.peer }, 'resp connection error'));
    socket.on('close', () => {
      this.clearStall();
      this.parser.dispose();
      this.out.discard();
    });
  }

  private onData(chunk: Buffer): void {
    if (this.closing) return;
    try {
      this.parser.push(chunk, this.onCommandFn);
    } catch (err) {
      this.flush();
      this.fail(err as Error);
    }
    this.flush();
    this.armStall();
  }

  private readonly onCommandFn = (args: Buffer[]) => this.onCommand(args);

  private onCommand(args: Buffer[]): void {
    if (this.closing) return;
    if (this.busy || this.queue.length > 0) {
      this.queue.push(args);
      return;
    }
    this.run(args);
  }

  private run(args: Buffer[]): void {
    const r = execute(this.ctx, this.session, args);
    if (r instanceof Promise) {
      this.busy = true;
      this.socket.pause();
      void r.then((reply) => {
        this.busy = false;
        this.write(reply);
        while (!this.busy && !this.closing && this.queue.length > 0) this.run(this.queue.shift()!);
        this.flush();
        this.maybeResume();
      });
      return;
    }
    this.write(r);
  }

  /** Queue a reply (a DRAM value is read into the output now); `flush` writes the batch. */
  private write(reply: Reply): void {
    if (Array.isArray(reply)) for (const p of reply) this.out.add(p);
    else this.out.add(reply);
    if (this.session.quit) {
      this.flush();
      this.closing = true;
      this.queue.length = 0;
      this.socket.end();
    } else if (this.out.bytes >= FLUSH_AT) this.flush();
  }

  private flush(): void {
    if (this.out.empty) return;
    this.out.flush(this.socket);
    if (this.socket.writableLength > this.opts.highWaterBytes && !this.waitingDrain) {
      this.waitingDrain = true;
      this.socket.pause();
      this.socket.once('drain', () => {
        this.waitingDrain = false;
        this.maybeResume();
      });
    }
  }

  private maybeResume(): void {
    if (!this.busy && !this.waitingDrain && !this.closing) this.socket.resume();
    this.armStall();
  }

  private fail(err: Error): void {
    if (this.closing) return;
    this.closing = true;
    this.queue.length = 0;
    this.onProtocolError();
    const budget = err instanceof RespProtocolError && err.budget;
    this.log.warn({ code: budget ? 'KVS_RESOURCE_EXHAUSTED' : 'KVS_BAD_HEADER', peer: this.peer }, `resp protocol error: ${err.message}; closing the connection`);
    if (!this.socket.destroyed) {
      this.socket.write(error(`ERR Protocol error: ${err.message}`));
      this.socket.end();
      setTimeout(() => this.socket.destroy(), 1000).unref();
    }
    this.parser.dispose();
  }

  private armStall(): void {
    this.clearStall();
    if (this.closing || this.busy || this.waitingDrain || !this.parser.midRequest) return;
    this.stallTimer = setTimeout(() => {
      this.log.warn({ code: 'KVS_TIMEOUT', peer: this.peer, held: this.parser.held }, `resp request incomplete with no new bytes for ${this.opts.stallMs} ms; closing the connection`);
      this.closing = true;
      this.onProtocolError();
      this.parser.dispose();
      this.socket.destroy();
    }, this.opts.stallMs);
    this.stallTimer.unref();
  }

  private clearStall(): void {
    if (this.stallTimer) clearTimeout(this.stallTimer);
    this.stallTimer = undefined;
  }
}
