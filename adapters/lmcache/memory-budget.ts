/**
 * LmMemoryBudget — the one cap on PUT payload bytes an lm:// server buffers, across all its connections.
 *
 * Rules (issue 9 item 1):
 * - Bytes are charged as they arrive from the socket (never a header's claimed length up front), and released
 *   when the PUT is handed to the tier stack, refused, or its connection dies.
 * - A new PUT whose claimed length does not fit in what is left is refused at its header; a PUT that stops
 *   fitting while it arrives (other connections grew) is refused then. Refused PUTs' bytes are skipped, so the
 *   stream stays aligned. LMCache's PUT has no reply: the client learns of the refusal as a GET miss
 *   (code 400, the protocol's only error), like any dropped save; the server counts it at once (`refusals`,
 *   reported as `refusedPuts`) and logs KVS_RESOURCE_EXHAUSTED once the PUT's bytes are skipped.
 */
export class LmMemoryBudget {
  used = 0;
  peak = 0;
  /** PUTs refused (at their header or while arriving), counted when refused. */
  refusals = 0;

  constructor(readonly capBytes: number) {}

  /** Would `n` more bytes fit now? */
  fits(n: number): boolean {
    return this.used + n <= this.capBytes;
  }

  /** Charge `n` bytes if they fit; false (nothing charged) if not. */
  take(n: number): boolean {
    if (this.used + n > this.capBytes) return false;
    this.used += n;
    if (this.used > this.peak) this.peak = this.used;
    return true;
  }

  release(n: number): void {
    this.used -= n;
    if (this.used < 0) this.used = 0;
  }
}
