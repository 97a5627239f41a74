/**
 * LmClient — a Node `lm://` client of any header generation (protocol.ts), for tests, benchmarks and tools.
 * It behaves like LMCache's `LMCServerConnector` on the wire (one socket, PUT without reply), but pipelines:
 * replies come back in request order, so any number of requests may be outstanding.
 *
 * - Every call has a deadline (`timeoutMs`, default 5 s); on expiry the connection is destroyed and every
 *   outstanding call rejects with KVS_TIMEOUT (an lm:// stream cannot be resynchronised).
 * - A closed connection rejects outstanding and later calls with KVS_UNAVAILABLE.
 * - `noDelay` (default true) sets TCP_NODELAY; LMCache's own client does not set it.
 */
import net from 'node:net';
import { ErrorCode, KvstashError } from '../../protocol/errors.js';
import {
  Command, decodeReplyHeader, encodeClientHeader, LAYOUTS, NO_META, ReturnCode,
  type Generation, type LmMeta, type ReplyHeader, type ReplyOrder,
} from './protocol.js';

export interface LmReply {
  header: ReplyHeader;
  payload: Buffer;
}

interface Waiter {
  withPayload: boolean;
  resolve: (r: LmReply) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

export interface LmClientOptions {
  timeoutMs?: number;
  noDelay?: boolean;
  /** Read replies as LMCache @ 0851d06c's client does (location 5th). Default 'location-last'. */
  replyOrder?: ReplyOrder;
}

export class LmClient {
  private readonly waiters: Waiter[] = [];
  private buf: Buffer = Buffer.alloc(0);
  private header: ReplyHeader | undefined;
  private payload: Buffer | undefined;
  private filled = 0;
  private error: Error | undefined;
  private readonly timeoutMs: number;
  private readonly replyOrder: ReplyOrder;

  private constructor(private readonly sock: net.Socket, readonly generation: Generation, opts: LmClientOptions) {
    this.timeoutMs = opts.timeoutMs ?? 5000;
    this.replyOrder = opts.replyOrder ?? 'location-last';
    sock.setNoDelay(opts.noDelay ?? true);
    sock.on('data', (c: Buffer) => this.onData(c));
    sock.on('error', (err) => this.abort(new KvstashError(ErrorCode.UNAVAILABLE, `lm:// connection failed: ${err.message}`, { cause: err })));
    sock.on('close', () => this.abort(new KvstashError(ErrorCode.UNAVAILABLE, 'lm:// connection closed by the server')));
  }

  static connect(host: string, port: number, generation: Generation, opts: LmClientOptions = {}): Promise<LmClient> {
    return new Promise((resolve, reject) => {
      const s = net.connect({ host, port }, () => {
        s.off('error', reject);
        resolve(new LmClient(s, generation, opts));
      });
      s.once('error', reject);
    });
  }

  /** PUT (no reply). `meta` defaults to fmt 1, dtype 2, zero shape. */
  put(key: string, payload: Buffer, meta: LmMeta = NO_META): void {
    const h = encodeClientHeader(this.generation, { command: Command.PUT, length: payload.length, key, ...meta });
    this.sock.cork();
    this.sock.write(h);
    if (payload.length) this.sock.write(payload);
    this.sock.uncork();
  }

  /** GET: the stored payload and the reply header (echoed metadata), or undefined on a miss. */
  async get(key: string): Promise<LmReply | undefined> {
    const r = await this.request(Command.GET, key, true);
    return r.header.code === ReturnCode.SUCCESS ? r : undefined;
  }

  async exist(key: string): Promise<boolean> {
    return (await this.request(Command.EXIST, key, false)).header.code === ReturnCode.SUCCESS;
  }

  async health(): Promise<boolean> {
    return (await this.request(Command.HEALTH, '', false)).header.code === ReturnCode.SUCCESS;
  }

  async list(): Promise<string[]> {
    const r = await this.request(Command.LIST, '', true);
    const text = r.payload.toString('utf8');
    return text ? text.split('\n') : [];
  }

  request(command: number, key: string, withPayload: boolean): Promise<LmReply> {
    if (this.error) return Promise.reject(this.error);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => this.abort(new KvstashError(ErrorCode.TIMEOUT, `lm:// request ${command} got no reply within ${this.timeoutMs} ms`)), this.timeoutMs);
      this.waiters.push({ withPayload, resolve, reject, timer });
      this.sock.write(encodeClientHeader(this.generation, { command, length: 0, key, ...NO_META }));
    });
  }

  /** Write raw bytes (tests). */
  writeRaw(b: Buffer): void {
    this.sock.write(b);
  }

  close(): void {
    this.sock.destroy();
  }

  private onData(chunk: Buffer): void {
    let data = chunk;
    const hb = LAYOUTS[this.generation].replyHeaderBytes;
    for (;;) {
      const w = this.waiters[0];
      if (!w) {
        if (data.length || this.buf.length) this.abort(new KvstashError(ErrorCode.BAD_HEADER, `lm:// server sent ${data.length + this.buf.length} unexpected bytes`));
        return;
      }
      if (!this.header) {
        if (this.buf.length + data.length < hb) {
          this.buf = Buffer.concat([this.buf, data]);
          return;
        }
        const take = hb - this.buf.length;
        const hdr = this.buf.length ? Buffer.concat([this.buf, data.subarray(0, take)]) : data.subarray(0, take);
        data = data.subarray(take);
        this.buf = Buffer.alloc(0);
        this.header = decodeReplyHeader(this.generation, hdr, this.replyOrder);
        const n = w.withPayload && this.header.code === ReturnCode.SUCCESS ? this.header.length : 0;
        this.payload = Buffer.allocUnsafe(n);
        this.filled = 0;
      }
      const p = this.payload!;
      const k = Math.min(p.length - this.filled, data.length);
      data.copy(p, this.filled, 0, k);
      this.filled += k;
      data = data.subarray(k);
      if (this.filled < p.length) return;
      const header = this.header;
      this.header = undefined;
      this.payload = undefined;
      this.waiters.shift();
      clearTimeout(w.timer);
      w.resolve({ header, payload: p });
    }
  }

  private abort(err: Error): void {
    if (!this.error) this.error = err;
    for (const w of this.waiters.splice(0)) {
      clearTimeout(w.timer);
      w.reject(err);
    }
    this.sock.destroy();
  }
}
