/**
 * Node client for wire protocol v1 (a ZeroMQ DEALER). Used by tests, benchmarks, the CLI and the lm:// adapter.
 *
 * - Requests are pipelined: each gets an id; replies are matched by id, in any order.
 * - Every request has a deadline (`timeoutMs`, default 5 s); on expiry it rejects with KVS_TIMEOUT and a
 *   late reply is ignored.
 * - An ERR reply rejects with a KvstashError carrying the sidecar's code.
 * - `namespace()` sends HELLO once per descriptor and re-sends it when the sidecar answers KVS_NS_UNKNOWN
 *   (for example after a restart without a file tier).
 */
import { Dealer } from 'zeromq';
import { decodeReply, encodeRequest } from '../protocol/codec.js';
import { ErrorCode, KvstashError } from '../protocol/errors.js';
import type { NamespaceDescriptor, PutResult } from '../protocol/wire.js';
import { namespaceId } from './keys.js';

export interface ClientOptions {
  timeoutMs?: number;
  /** Extra socket setup before connect (CURVE keys). */
  configure?: (s: Dealer) => void;
}

export interface Reply {
  header: Record<string, unknown> & { id: number; status: string };
  blocks: Buffer[];
}

interface Pending {
  resolve: (r: Reply) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

function keysField(keys: Buffer | Buffer[]): Buffer {
  return Buffer.isBuffer(keys) ? keys : Buffer.concat(keys);
}

export class KvstashClient {
  private readonly sock: Dealer;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly outbox: Buffer[][] = [];
  private sending = false;
  private closed = false;
  private readonly timeoutMs: number;
  private readonly hellos = new Map<string, NamespaceDescriptor>();

  constructor(readonly endpoint: string, opts: ClientOptions = {}) {
    this.timeoutMs = opts.timeoutMs ?? 5000;
    this.sock = new Dealer({ linger: 0, sendHighWaterMark: 100_000, receiveHighWaterMark: 100_000 });
    opts.configure?.(this.sock);
    this.sock.connect(endpoint);
    void this.receiveLoop();
  }

  private async receiveLoop(): Promise<void> {
    try {
      for await (const frames of this.sock) {
        let r: Reply;
        try {
          r = decodeReply(frames as Buffer[]) as Reply;
        } catch {
          continue;
        }
        const p = this.pending.get(r.header.id);
        if (!p) continue;
        this.pending.delete(r.header.id);
        clearTimeout(p.timer);
        if (r.header.status === 'OK') p.resolve(r);
        else p.reject(new KvstashError((r.header.code as ErrorCode) ?? ErrorCode.INTERNAL, String(r.header.message ?? 'error')));
      }
    } catch {
      /* socket closed */
    }
  }

  /** Send a raw request header (v and id are filled in) with block frames. */
  request(header: Record<string, unknown>, blocks: Buffer[] = [], timeoutMs = this.timeoutMs): Promise<Reply> {
    if (this.closed) return Promise.reject(new KvstashError(ErrorCode.UNAVAILABLE, 'client is closed'));
    const id = this.nextId++;
    if (this.nextId > 0xffffffff) this.nextId = 1;
    return new Promise<Reply>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new KvstashError(ErrorCode.TIMEOUT, `${String(header.op)} #${id} got no reply within ${timeoutMs} ms from ${this.endpoint}`));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      this.send(encodeRequest({ ...header, id }, blocks));
    });
  }

  /** Send pre-encoded frames as they are (tests of bad input). The header's id must be set by the caller. */
  sendRaw(frames: Buffer[]): void {
    this.send(frames);
  }

  /** Wait for the reply to a raw request with this id. */
  awaitReply(id: number, timeoutMs = this.timeoutMs): Promise<Reply> {
    return new Promise<Reply>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new KvstashError(ErrorCode.TIMEOUT, `no reply to #${id} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
    });
  }

  private send(frames: Buffer[]): void {
    this.outbox.push(frames);
    if (!this.sending) void this.pump();
  }

  private async pump(): Promise<void> {
    this.sending = true;
    try {
      while (this.outbox.length && !this.closed) await this.sock.send(this.outbox.shift()!);
    } catch {
      /* closed */
    } finally {
      this.sending = false;
    }
  }

  async hello(ns: NamespaceDescriptor, client = 'kvstash-node'): Promise<string> {
    const r = await this.request({ op: 'HELLO', client, namespace: ns });
    const id = r.header.ns as string;
    this.hellos.set(id, ns);
    return id;
  }

  /** Register a namespace (HELLO) unless already done, and return its id. */
  async namespace(ns: NamespaceDescriptor): Promise<string> {
    const id = namespaceId(ns);
    return this.hellos.has(id) ? id : this.hello(ns);
  }

  private async withNs(ns: string, header: Record<string, unknown>, blocks: Buffer[] = []): Promise<Reply> {
    try {
      return await this.request({ ...header, ns }, blocks);
    } catch (err) {
      const d = this.hellos.get(ns);
      if (d && (err as KvstashError).code === ErrorCode.NS_UNKNOWN) {
        await this.hello(d);
        return this.request({ ...header, ns }, blocks);
      }
      throw err;
    }
  }

  async lookup(ns: string, keys: Buffer | Buffer[], prefetch = false): Promise<{ hit: number; tiers: Record<string, number>; loadMs: Record<string, number> }> {
    const r = await this.withNs(ns, { op: 'LOOKUP', keys: keysField(keys), ...(prefetch ? { prefetch } : {}) });
    return { hit: r.header.hit as number, tiers: r.header.tiers as Record<string, number>, loadMs: (r.header.load_ms ?? {}) as Record<string, number> };
  }

  async put(ns: string, keys: Buffer | Buffer[], blocks: Buffer[], sums?: string[]): Promise<PutResult[]> {
    const r = await this.withNs(ns, { op: 'PUT', keys: keysField(keys), sizes: blocks.map((b) => b.length), ...(sums ? { sums } : {}) }, blocks);
    return r.header.results as PutResult[];
  }

  /** One entry per key: the block bytes, or undefined for a miss. */
  async get(ns: string, keys: Buffer | Buffer[]): Promise<(Buffer | undefined)[]> {
    const r = await this.withNs(ns, { op: 'GET', keys: keysField(keys) });
    const sizes = r.header.sizes as number[];
    let j = 0;
    return sizes.map((s) => (s >= 0 ? r.blocks[j++] : undefined));
  }

  async exists(ns: string, keys: Buffer | Buffer[]): Promise<{ exists: boolean[]; prefix: number }> {
    const r = await this.withNs(ns, { op: 'EXISTS', keys: keysField(keys) });
    return { exists: r.header.exists as boolean[], prefix: r.header.prefix as number };
  }

  async delete(ns: string, keys: Buffer | Buffer[]): Promise<number> {
    const r = await this.withNs(ns, { op: 'DELETE', keys: keysField(keys) });
    return r.header.deleted as number;
  }

  async stats(): Promise<Record<string, unknown>> {
    return (await this.request({ op: 'STATS' })).header.stats as Record<string, unknown>;
  }

  async ping(timeoutMs?: number): Promise<string> {
    return (await this.request({ op: 'PING' }, [], timeoutMs)).header.server as string;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(new KvstashError(ErrorCode.UNAVAILABLE, 'client closed'));
    }
    this.pending.clear();
    this.sock.close();
  }
}
