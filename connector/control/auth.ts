/**
 * Tenancy and authentication shared by the data socket and the gRPC control plane.
 *
 * Rules:
 * - A principal is a bearer token (`authTokens`: token → tenants) or a CURVE client public key (`curveClients`:
 *   z85 key → tenants). Tenants are a list of names or "*" (every tenant: operators, routers).
 * - Auth is on as soon as either map is non-empty. Then every request must come from a known principal
 *   (else KVS_UNAUTHENTICATED) and may only name its own tenants (else KVS_PERMISSION_DENIED). With both maps
 *   empty (the embedded default, loopback/ipc only) every caller may touch every tenant.
 * - Data-socket binding (AUTH op): zeromq.js exposes neither message properties nor the ZAP user id, so the
 *   sidecar cannot learn which CURVE key sent a message. The client therefore sets a random routing id R
 *   (≥ 16 bytes, first byte not 0) and sends AUTH with proof = HMAC-SHA256(secret, "kvstash-auth-v1\n" + hex(R) +
 *   "\n" + ts) where secret is the token, or X25519(client secret, server public) for a CURVE key; ts (ms) must
 *   be within 5 minutes. The sidecar binds R to the principal. Under CURVE, R and the proof never cross the
 *   network in clear; with tokens on plain tcp an on-path observer could replay them (use CURVE or ipc).
 */
import { createHash, createHmac, createPrivateKey, createPublicKey, diffieHellman, timingSafeEqual, type KeyObject } from 'node:crypto';
import { ErrorCode, KvstashError } from '../../protocol/errors.js';

export interface Principal {
  /** "token:<sha256 prefix>" or "curve:<z85 key>"; "local" when auth is off. Never the token itself. */
  id: string;
  tenants: '*' | ReadonlySet<string>;
}

export const LOCAL: Principal = { id: 'local', tenants: '*' };
export const MAX_SKEW_MS = 5 * 60_000;

function parseTenants(v: unknown, what: string): Principal['tenants'] {
  if (v === '*' || (Array.isArray(v) && v.includes('*'))) return '*';
  const list = typeof v === 'string' ? v.split(',').map((s) => s.trim()).filter(Boolean) : v;
  if (!Array.isArray(list) || list.length === 0 || !list.every((t) => typeof t === 'string' && t.length > 0)) {
    throw new KvstashError(ErrorCode.CONFIG, `${what}: expected a list of tenant names or "*", got ${JSON.stringify(v)}`);
  }
  return new Set(list as string[]);
}

export function tokenId(token: string): string {
  return 'token:' + createHash('sha256').update(token, 'utf8').digest('hex').slice(0, 16);
}

export class AccessPolicy {
  private readonly tokens = new Map<string, Principal>();
  private readonly tokenSecrets = new Map<string, string>();
  private readonly keys = new Map<string, Principal>();

  constructor(tokens: Record<string, unknown> | null = null, curveClients: Record<string, unknown> | null = null) {
    for (const [token, t] of Object.entries(tokens ?? {})) {
      if (token.length < 16) throw new KvstashError(ErrorCode.CONFIG, `authTokens: a token must have at least 16 characters (generate one with \`kvstash keygen --token\`)`);
      const p = { id: tokenId(token), tenants: parseTenants(t, `authTokens[${tokenId(token)}]`) };
      this.tokens.set(token, p);
      this.tokenSecrets.set(p.id, token);
    }
    for (const [key, t] of Object.entries(curveClients ?? {})) {
      if (!/^[0-9a-zA-Z.\-:+=^!/*?&<>()[\]{}@%$#]{40}$/.test(key)) throw new KvstashError(ErrorCode.CONFIG, `curveClients: ${JSON.stringify(key)} is not a 40-char z85 public key`);
      this.keys.set(key, { id: `curve:${key}`, tenants: parseTenants(t, `curveClients[${key}]`) });
    }
  }

  get enabled(): boolean {
    return this.tokens.size > 0 || this.keys.size > 0;
  }
  get hasCurveClients(): boolean {
    return this.keys.size > 0;
  }

  byToken(token: string): Principal | undefined {
    return this.tokens.get(token);
  }
  /** The token behind a token principal id (for verifying data-socket AUTH proofs). */
  tokenSecret(id: string): string | undefined {
    return this.tokenSecrets.get(id);
  }
  byCurveKey(z85: string): Principal | undefined {
    return this.keys.get(z85);
  }

  allows(p: Principal | undefined, tenant: string): boolean {
    if (!this.enabled) return true;
    return p !== undefined && (p.tenants === '*' || p.tenants.has(tenant));
  }

  /** Throw UNAUTHENTICATED (no principal while auth is on) or PERMISSION_DENIED (tenant not allowed). */
  check(p: Principal | undefined, tenant?: string): void {
    if (!this.enabled) return;
    if (!p) throw new KvstashError(ErrorCode.UNAUTHENTICATED, 'authentication required: this sidecar has auth on');
    if (tenant !== undefined && !this.allows(p, tenant)) {
      throw new KvstashError(ErrorCode.PERMISSION_DENIED, `${p.id} may not access tenant ${JSON.stringify(tenant)}`);
    }
  }
}

// ---- Z85 (ZeroMQ RFC 32) and X25519 with CURVE keys ------------------------------------------------------

const Z85 = '0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#';
const Z85_INV = new Map([...Z85].map((c, i) => [c, i]));

export function z85Decode(s: string): Buffer {
  if (s.length % 5 !== 0) throw new KvstashError(ErrorCode.INVALID_ARGUMENT, `z85 text length ${s.length} is not a multiple of 5`);
  const out = Buffer.alloc((s.length / 5) * 4);
  for (let i = 0; i < s.length; i += 5) {
    let v = 0;
    for (let j = 0; j < 5; j++) {
      const d = Z85_INV.get(s[i + j]!);
      if (d === undefined) throw new KvstashError(ErrorCode.INVALID_ARGUMENT, `invalid z85 character ${JSON.stringify(s[i + j])}`);
      v = v * 85 + d;
    }
    out.writeUInt32BE(v >>> 0, (i / 5) * 4);
  }
  return out;
}

export function z85Encode(b: Buffer): string {
  let s = '';
  for (let i = 0; i < b.length; i += 4) {
    let v = b.readUInt32BE(i);
    const chunk: string[] = [];
    for (let j = 0; j < 5; j++) { chunk.unshift(Z85[v % 85]!); v = Math.floor(v / 85); }
    s += chunk.join('');
  }
  return s;
}

function x25519Private(secretZ85: string): KeyObject {
  return createPrivateKey({ key: Buffer.concat([Buffer.from('302e020100300506032b656e04220420', 'hex'), z85Decode(secretZ85)]), format: 'der', type: 'pkcs8' });
}
function x25519Public(raw: Buffer): KeyObject {
  return createPublicKey({ key: Buffer.concat([Buffer.from('302a300506032b656e032100', 'hex'), raw]), format: 'der', type: 'spki' });
}

/** The z85 public key of a z85 CURVE secret key. */
export function curvePublicOf(secretZ85: string): string {
  const der = createPublicKey(x25519Private(secretZ85)).export({ format: 'der', type: 'spki' });
  return z85Encode(der.subarray(der.length - 32));
}

/** X25519(our secret, their public): the same 32 bytes on both ends of a CURVE pair. */
export function curveShared(ourSecretZ85: string, theirPublicZ85: string): Buffer {
  return diffieHellman({ privateKey: x25519Private(ourSecretZ85), publicKey: x25519Public(z85Decode(theirPublicZ85)) });
}

// ---- data-socket AUTH proof --------------------------------------------------------------------------------

export function authProof(secret: string | Buffer, routingId: Buffer, ts: number): Buffer {
  return createHmac('sha256', secret).update(`kvstash-auth-v1\n${routingId.toString('hex')}\n${ts}`).digest();
}

export function proofMatches(expected: Buffer, got: unknown): boolean {
  return got instanceof Uint8Array && got.length === expected.length && timingSafeEqual(expected, got);
}
