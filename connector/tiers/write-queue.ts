/**
 * Bounded write-behind queue for one tier. Saves beyond the bounds are dropped and counted (it is a cache);
 * reads never wait on it. Jobs run with a fixed concurrency in FIFO order.
 */
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

  private pump(): void {
    while (this.running < this.opts.concurrency && this.jobs.length > 0) {
      const job = this.jobs.shift()!;
      this.running++;
      job.run().then(
        () => { this.completed++; },
        () => { this.failed++; },
      ).finally(() => {
        this.running--;
        this.queuedBytes -= job.bytes;
        this.pump();
        if (this.depth === 0) for (const w of this.idleWaiters.splice(0)) w();
      });
    }
  }

  /** Resolves when every queued job has finished. */
  drain(): Promise<void> {
    if (this.depth === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }
}
