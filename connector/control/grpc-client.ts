/**
 * ControlClient — a small promise/async-iterator wrapper over the generated gRPC client, used by the CLI and tests.
 * Every call has a deadline (`deadlineMs`, default 5 s; streams: `streamDeadlineMs`, default none); failures
 * reject with a KvstashError carrying the server's kvstash code (status.ts).
 */
import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { fromServiceError } from './status.js';
import { controlClientClass } from './proto.js';

export type Msg = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

export interface ControlClientOptions {
  /** Bearer token (authorization metadata). */
  token?: string;
  /** PEM file of the CA that signed the server certificate: switches TLS on. */
  tlsCaFile?: string;
  /** Client certificate and key (mutual TLS). */
  tlsCertFile?: string;
  tlsKeyFile?: string;
  /** Override the TLS server name (when the certificate names a host other than the address). */
  tlsServerName?: string;
  deadlineMs?: number;
  streamDeadlineMs?: number;
}

type Unary = (req: Msg, md: grpc.Metadata, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res: Msg) => void) => grpc.ClientUnaryCall;
type Streaming = (req: Msg, md: grpc.Metadata, opts: grpc.CallOptions) => grpc.ClientReadableStream<Msg>;

export class ControlClient {
  readonly raw: grpc.Client;

  constructor(readonly address: string, private readonly opts: ControlClientOptions = {}) {
    const Ctor = controlClientClass();
    let creds = grpc.credentials.createInsecure();
    const channelOpts: grpc.ChannelOptions = { 'grpc.max_receive_message_length': 64 * 2 ** 20 };
    if (opts.tlsCaFile) {
      creds = grpc.credentials.createSsl(readFileSync(opts.tlsCaFile), opts.tlsKeyFile ? readFileSync(opts.tlsKeyFile) : null, opts.tlsCertFile ? readFileSync(opts.tlsCertFile) : null);
      if (opts.tlsServerName) channelOpts['grpc.ssl_target_name_override'] = opts.tlsServerName;
    }
    this.raw = new Ctor(address, creds, channelOpts);
  }

  private md(): grpc.Metadata {
    const md = new grpc.Metadata();
    if (this.opts.token) md.set('authorization', `Bearer ${this.opts.token}`);
    return md;
  }

  call(method: string, req: Msg = {}, deadlineMs = this.opts.deadlineMs ?? 5000): Promise<Msg> {
    const fn = (this.raw as unknown as Record<string, Unary>)[method]!.bind(this.raw);
    return new Promise((resolve, reject) => {
      fn(req, this.md(), { deadline: Date.now() + deadlineMs }, (err, res) => (err ? reject(fromServiceError(err)) : resolve(res)));
    });
  }

  /** A server stream as an async iterable; errors (deadline, refusal) are thrown from the iteration. */
  stream(method: string, req: Msg = {}, deadlineMs = this.opts.streamDeadlineMs): { call: grpc.ClientReadableStream<Msg>; messages: AsyncIterable<Msg>; ready: Promise<void> } {
    const fn = (this.raw as unknown as Record<string, Streaming>)[method]!.bind(this.raw);
    const call = fn(req, this.md(), deadlineMs ? { deadline: Date.now() + deadlineMs } : {});
    async function* iterate(): AsyncGenerator<Msg> {
      try {
        for await (const m of call) yield m as Msg;
      } catch (err) {
        throw fromServiceError(err);
      }
    }
    // Resolves when the server has sent its headers (WatchTierEvents: the subscription is in place).
    const ready = new Promise<void>((resolve, reject) => {
      call.once('metadata', () => resolve());
      call.once('error', (err) => reject(fromServiceError(err)));
    });
    ready.catch(() => undefined);
    return { call, messages: iterate(), ready };
  }

  lookup(req: Msg): Promise<Msg> { return this.call('Lookup', req); }
  stats(): Promise<Msg> { return this.call('Stats'); }
  pin(req: Msg): Promise<Msg> { return this.call('Pin', req); }
  unpin(req: Msg): Promise<Msg> { return this.call('Unpin', req); }
  evict(req: Msg): Promise<Msg> { return this.call('Evict', req); }
  health(): Promise<Msg> { return this.call('Health'); }
  dropNamespaces(req: Msg): Promise<Msg> { return this.call('DropNamespaces', req); }

  close(): void {
    this.raw.close();
  }
}
