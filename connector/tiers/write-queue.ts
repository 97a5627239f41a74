/**
 * Bounded write-behind queue for one tier. Saves beyond the bounds are dropped and counted (it is a cache);
 * reads never wait on it. Jobs run with a fixed concurrency in FIFO order.
 */
import { logger } from '../log.js';

export interface WriteQueueOptions {
  maxItems: number;
  maxBytes: number;
  concurrency: number;
}

export class WriteQueue {
  private readonly jobs: { bytes: number; run: () => Promise<void> }[] = [];
  private running = 0;
  private queuedBytes = 0;
  dropped = 0;
  completed = 0;
  failed = 0;
  private idleWaiters: (() => void)[] = [];

  constructor(private readonly opts: WriteQueueOptions) {}

  get depth(): number {
    return this.jobs.length + this.running;
  }
  get bytes(): number {
    return this.queuedBytes;
  }

  /** Queue a job; false (and counted as dropped) when the queue is full. */
  offer(bytes: number, run: () => Promise<void>): boolean {
    if (this.jobs.length >= this.opts.maxItems || (this.queuedBytes + bytes > this.opts.maxBytes && this.queuedBytes > 0)) {
      this.dropped++;
      return false;
    }
    this.jobs.push({ bytes, run });
    this.queuedBytes += bytes;
    this.pump();
    return true;
  }

  /** Count a side job (a quarantine move) as running until it settles, so drain() waits for it too. */
  track(p: Promise<unknown>): void {
    this.running++;
    void p.catch(() => undefined).finally(() => this.settle(0));
  }

  private settle(bytes: number): void {
    this.running--;
    this.queuedBytes -= bytes;
    this.pump();
    if (this.depth === 0) for (const w of this.idleWaiters.splice(0)) w();
  }

  private pump(): void {
    while (this.running < this.opts.concurrency && this.jobs.length > 0) {
      const job = this.jobs.shift()!;
      this.running++;
      job.run().then(
        () => { this.completed++; },
        () => { this.failed++; },
      ).finally(() => this.settle(job.bytes));
    }
  }

  /** Resolves when every queued job has finished. */
  drain(): Promise<void> {
    if (this.depth === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }
}

/** Failed lower-tier writes: counted, remembered on the tier (health: DEGRADED), logged at most every 5 s. */
export class WriteFaults {
  private lastLog = 0;
  private unlogged = 0;

  failed(t: { name: string; writeFault?: string; c: { writeErrors: number } }, key: string, err: unknown): void {
    t.c.writeErrors++;
    t.writeFault = (err as Error)?.message ?? String(err);
    const now = Date.now();
    if (now - this.lastLog < 5000) {
      this.unlogged++;
      return;
    }
    logger('tiers').warn({ tier: t.name, key, err: t.writeFault, unlogged: this.unlogged }, 'tier write failed; the block was not stored there');
    this.lastLog = now;
    this.unlogged = 0;
  }
}
