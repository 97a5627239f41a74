/**
 * Server-stream writers that never let a slow consumer stall the sidecar.
 * - `push` (events): when the consumer stops reading and the stream's own buffer is full, up to `limit` messages
 *   wait here; beyond that they are dropped and counted, and the next message delivered carries `dropped`.
 * - `latest` (progress): while the consumer is behind, only the newest message is kept.
 */
import type { ServerWritableStream } from '@grpc/grpc-js';

export class BoundedStream<T extends object> {
  dropped = 0;
  totalDropped = 0;
  private readonly queue: T[] = [];
  private latestPending: T | undefined;
  private blocked = false;
  private closed = false;

  constructor(private readonly call: ServerWritableStream<unknown, T>, private readonly limit: number, private readonly onDrop?: () => void) {
    call.on('drain', () => this.flush());
    const close = () => { this.closed = true; this.queue.length = 0; };
    call.on('cancelled', close);
    call.on('close', close);
    call.on('error', close);
  }

  get isClosed(): boolean {
    return this.closed || this.call.cancelled;
  }

  push(msg: T): void {
    if (this.isClosed) return;
    if (!this.blocked && this.queue.length === 0) {
      this.write(msg);
    } else if (this.queue.length < this.limit) {
      this.queue.push(msg);
    } else {
      this.dropped++;
      this.totalDropped++;
      this.onDrop?.();
    }
  }

  latest(msg: T): void {
    if (this.isClosed) return;
    if (this.blocked) this.latestPending = msg;
    else this.write(msg);
  }

  private write(msg: T): void {
    const out = this.dropped ? { ...msg, dropped: this.dropped } : msg;
    this.dropped = 0;
    if (!this.call.write(out)) this.blocked = true;
  }

  private flush(): void {
    this.blocked = false;
    while (!this.blocked && !this.isClosed && this.queue.length) this.write(this.queue.shift()!);
    if (!this.blocked && this.latestPending) {
      const m = this.latestPending;
      this.latestPending = undefined;
      this.write(m);
    }
  }

  /** End the stream once what is queued has been handed to gRPC. */
  async end(): Promise<void> {
    while (!this.isClosed && (this.blocked || this.queue.length || this.latestPending)) {
      await new Promise<void>((resolve) => {
        const done = () => { this.call.off('drain', done); this.call.off('close', done); resolve(); };
        this.call.once('drain', done);
        this.call.once('close', done);
      });
      this.flush();
    }
    if (!this.isClosed) this.call.end();
  }
}
