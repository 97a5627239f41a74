/**
 * ControlServerPlugin — serves kvstash.v1.Control (gRPC) next to the data socket.
 * Transport: plaintext h2c on loopback by default; TLS when a certificate and key are configured (mutual TLS
 * when a client CA is too). Auth: bearer tokens (see auth.ts); a non-loopback address without TLS or without
 * tokens is logged as a warning at start.
 */
import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { ErrorCode, KvstashError } from '../../protocol/errors.js';
import { logger } from '../log.js';
import type { PluginHost, SidecarPlugin } from '../server/sidecar.js';
import type { AccessPolicy } from './auth.js';
import { AuthThrottle } from './auth-throttle.js';
import { ControlService, type CallObserver } from './control-service.js';
import { controlService } from './proto.js';

export interface ControlServerOptions {
  /** host:port; port 0 picks a free one (see `address` after start). */
  address: string;
  policy: AccessPolicy;
  streamBuffer?: number;
  tls?: { certFile: string; keyFile: string; clientCaFile?: string };
  /** Bytes of distinct pinned blocks allowed; undefined = unbounded. */
  pinBudgetBytes?: number;
  onCall?: CallObserver;
  onStreamDrop?: (method: string) => void;
  /** Failed bearer-token authentications allowed per second per peer host (burst: authFailureBurst); 0 = unthrottled. Default 5. */
  authFailuresPerSecond?: number;
  authFailureBurst?: number;
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host.startsWith('127.') || host === '[::1]' || host === '::1';
}

export class ControlServerPlugin implements SidecarPlugin {
  readonly name = 'grpc-control';
  service: ControlService | undefined;
  throttle: AuthThrottle | undefined;
  /** The bound host:port, after start. */
  address = '';
  private server: grpc.Server | undefined;
  private readonly log = logger('grpc');

  constructor(private readonly opts: ControlServerOptions) {}

  attach(sidecar: PluginHost): void {
    if (this.opts.pinBudgetBytes !== undefined) sidecar.tierControl.setPinBudget(this.opts.pinBudgetBytes);
  }

  private credentials(): grpc.ServerCredentials {
    const tls = this.opts.tls;
    if (!tls) return grpc.ServerCredentials.createInsecure();
    try {
      const ca = tls.clientCaFile ? readFileSync(tls.clientCaFile) : null;
      return grpc.ServerCredentials.createSsl(ca, [{ cert_chain: readFileSync(tls.certFile), private_key: readFileSync(tls.keyFile) }], ca !== null);
    } catch (err) {
      throw new KvstashError(ErrorCode.CONFIG, `gRPC TLS: ${(err as Error).message}`, { cause: err });
    }
  }

  async start(sidecar: PluginHost): Promise<void> {
    this.throttle = new AuthThrottle(this.opts.authFailuresPerSecond ?? 5, this.opts.authFailureBurst ?? 20);
    this.service = new ControlService(sidecar, {
      policy: this.opts.policy, streamBuffer: this.opts.streamBuffer ?? 1024, onCall: this.opts.onCall, onStreamDrop: this.opts.onStreamDrop,
      throttle: this.throttle,
    });
    const server = new grpc.Server({ 'grpc.max_receive_message_length': 64 * 2 ** 20, 'grpc.max_send_message_length': 64 * 2 ** 20 });
    server.addService(controlService(), this.service.handlers());
    const port = await new Promise<number>((resolve, reject) => {
      server.bindAsync(this.opts.address, this.credentials(), (err, p) => (err ? reject(new KvstashError(ErrorCode.CONFIG, `gRPC cannot listen on ${this.opts.address}: ${err.message}`, { cause: err })) : resolve(p)));
    });
    this.server = server;
    const host = this.opts.address.slice(0, this.opts.address.lastIndexOf(':'));
    this.address = `${host}:${port}`;
    if (!isLoopback(host) && (!this.opts.tls || !this.opts.policy.enabled)) {
      this.log.warn({ address: this.address }, `gRPC control plane on a non-loopback address ${this.opts.tls ? '' : 'without TLS '}${this.opts.policy.enabled ? '' : 'without auth tokens'}`);
    }
    this.log.info({ address: this.address, tls: !!this.opts.tls, auth: this.opts.policy.enabled }, 'gRPC control plane listening');
  }

  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.service?.close();
    this.server = undefined;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => { server.forceShutdown(); resolve(); }, 1000);
      server.tryShutdown(() => { clearTimeout(timer); resolve(); });
    });
  }
}
