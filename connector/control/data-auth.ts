/**
 * DataAuthPlugin — CURVE encryption, ZAP key check and tenant binding on the ZeroMQ data socket.
 *
 * - With `curveSecretKey` the ROUTER is a CURVE server; with `curveClients` its ZAP domain refuses every client
 *   key not listed (the handshake fails; clients see `handshake:error:auth`).
 * - AUTH op (plugin op on the data socket), fields besides v/id/op:
 *   `method` "curve" | "token"; `key` the client's z85 public key (curve) or the token id from
 *   `tokenId(token)` (token); `ts` the client's clock in ms; `proof` 32 bytes (see auth.ts for the formula).
 *   Reply: `principal`, `tenants` (list, or ["*"]). Errors: KVS_BAD_FIELD, KVS_UNAUTHENTICATED.
 * - Guard: with auth on, every op but PING and AUTH needs a bound routing id (KVS_UNAUTHENTICATED), and ops
 *   naming a namespace (HELLO, LOOKUP, GET, PUT, EXISTS, DELETE) need its tenant (KVS_PERMISSION_DENIED); plugin
 *   ops registered as operator ops (ADOPT_RESTORE) need a principal of every tenant, "*" (KVS_PERMISSION_DENIED).
 */
import { ErrorCode, KvstashError } from '../../protocol/errors.js';
import type { Router } from 'zeromq';
import { logger } from '../log.js';
import type { PeerContext, PluginHost, SidecarPlugin } from '../server/sidecar.js';
import { authProof, curvePublicOf, curveShared, MAX_SKEW_MS, proofMatches, type AccessPolicy, type Principal } from './auth.js';
import { registerZapDomain, unregisterZapDomain } from './zap.js';

export const AUTH_OP = 'AUTH';
const MAX_BINDINGS = 100_000;

export interface DataAuthOptions {
  policy: AccessPolicy;
  /** z85 CURVE secret key of the sidecar; CURVE is off without it. */
  curveSecretKey?: string;
}

export class DataAuthPlugin implements SidecarPlugin {
  readonly name = 'data-auth';
  readonly counters = { authOk: 0, authFailed: 0, refused: 0 };
  private readonly bound = new Map<string, Principal>();
  private readonly log = logger('auth');
  readonly curvePublicKey: string | undefined;

  private constructor(private readonly opts: DataAuthOptions, private readonly zapDomain: string | undefined) {
    this.curvePublicKey = opts.curveSecretKey ? curvePublicOf(opts.curveSecretKey) : undefined;
  }

  /** Registers the ZAP domain first (async), so the handler exists before the socket binds. */
  static async create(opts: DataAuthOptions): Promise<DataAuthPlugin> {
    const policy = opts.policy;
    const domain = opts.curveSecretKey && policy.hasCurveClients
      ? await registerZapDomain((key) => policy.byCurveKey(key)?.id, 'kvstash-data')
      : undefined;
    return new DataAuthPlugin(opts, domain);
  }

  attach(sidecar: PluginHost): void {
    const secret = this.opts.curveSecretKey;
    if (secret) {
      sidecar.addSocketSetup((router: Router) => {
        router.curveServer = true;
        router.curveSecretKey = secret;
        router.curvePublicKey = this.curvePublicKey!;
        if (this.zapDomain) {
          router.zapDomain = this.zapDomain;
          router.zapEnforceDomain = true;
        }
      });
    }
    if (!this.opts.policy.enabled) return;
    sidecar.registerOp(AUTH_OP, (h, peer) => this.authenticate(h, peer));
    sidecar.setPrincipalResolver((routingId) => this.bound.get(routingId.toString('hex'))?.id);
    sidecar.addGuard((peer, op, ns) => {
      if (op === AUTH_OP || op === 'PING') return;
      try {
        const principal = this.bound.get(peer.routingId.toString('hex'));
        this.opts.policy.check(principal, ns?.tenant);
        if (sidecar.isOperatorOp(op) && principal?.tenants !== '*') {
          throw new KvstashError(ErrorCode.PERMISSION_DENIED, `${op}: only an operator (a principal of every tenant, "*") may call it; ${principal?.id} is not`);
        }
      } catch (err) {
        this.counters.refused++;
        if ((err as KvstashError).code === ErrorCode.UNAUTHENTICATED) {
          throw new KvstashError(ErrorCode.UNAUTHENTICATED, `${op}: this sidecar requires AUTH first (see docs/control-plane.md#data-socket-auth)`);
        }
        throw err;
      }
    });
  }

  /** The principal a routing id is bound to (tests, metrics). */
  principal(routingId: Buffer): Principal | undefined {
    return this.bound.get(routingId.toString('hex'));
  }

  private authenticate(h: Record<string, unknown>, peer: PeerContext): Record<string, unknown> {
    const fail = (msg: string): never => {
      this.counters.authFailed++;
      this.log.warn({ routingId: peer.routingId.toString('hex'), method: h.method }, `AUTH refused: ${msg}`);
      throw new KvstashError(ErrorCode.UNAUTHENTICATED, `AUTH: ${msg}`);
    };
    const { method, key, proof } = h;
    // A ms timestamp needs 41 bits: msgpack encoders other than JS's send it as int64/uint64, decoded as bigint.
    const ts = typeof h.ts === 'bigint' ? Number(h.ts) : h.ts;
    if (method !== 'curve' && method !== 'token') throw new KvstashError(ErrorCode.BAD_FIELD, `AUTH: "method" must be "curve" or "token", got ${JSON.stringify(method)}`);
    if (typeof key !== 'string' || key.length === 0 || key.length > 128) throw new KvstashError(ErrorCode.BAD_FIELD, 'AUTH: "key" must be a non-empty string');
    if (typeof ts !== 'number' || !Number.isSafeInteger(ts)) throw new KvstashError(ErrorCode.BAD_FIELD, 'AUTH: "ts" must be an integer (ms since the epoch)');
    if (!(proof instanceof Uint8Array)) throw new KvstashError(ErrorCode.BAD_FIELD, 'AUTH: "proof" must be binary');
    const rid = peer.routingId;
    if (rid.length < 16 || rid[0] === 0) fail('set a random routing id of at least 16 bytes (first byte not 0) on the socket before connecting');
    if (Math.abs(Date.now() - ts) > MAX_SKEW_MS) fail(`"ts" is more than ${MAX_SKEW_MS / 1000} s away from the sidecar clock`);
    let principal: Principal | undefined;
    let secret: Buffer | string | undefined;
    if (method === 'curve') {
      if (!this.opts.curveSecretKey) fail('CURVE is not enabled on this sidecar');
      principal = this.opts.policy.byCurveKey(key);
      if (principal) secret = curveShared(this.opts.curveSecretKey!, key);
    } else {
      secret = this.opts.policy.tokenSecret(key);
      principal = secret === undefined ? undefined : this.opts.policy.byToken(secret);
    }
    if (!principal || secret === undefined || !proofMatches(authProof(secret, rid, ts), proof)) fail('unknown key or wrong proof');
    if (this.bound.size >= MAX_BINDINGS) this.bound.delete(this.bound.keys().next().value!);
    this.bound.set(rid.toString('hex'), principal!);
    this.counters.authOk++;
    this.log.tr({ principal: principal!.id }, 'AUTH ok');
    return { principal: principal!.id, tenants: principal!.tenants === '*' ? ['*'] : [...principal!.tenants] };
  }

  async start(): Promise<void> {}

  async stop(): Promise<void> {
    if (this.zapDomain) unregisterZapDomain(this.zapDomain);
  }
}
