/**
 * Client side of data-socket auth (Node): CURVE keys and a random routing id on the DEALER, then AUTH.
 * The Python connector follows the same recipe (docs/control-plane.md#data-socket-auth).
 */
import { randomBytes } from 'node:crypto';
import type { Dealer } from 'zeromq';
import { ErrorCode, KvstashError } from '../../protocol/errors.js';
import { KvstashClient, type ClientOptions } from '../client.js';
import { authProof, curveShared, tokenId } from './auth.js';
import { AUTH_OP } from './data-auth.js';

export interface CurveCredentials {
  publicKey: string;
  secretKey: string;
  /** The sidecar's z85 public key. */
  serverKey: string;
}

export interface DataCredentials {
  curve?: CurveCredentials;
  /** Bearer token from `authTokens`; proves the principal (AUTH) with or without CURVE. */
  token?: string;
}

/** Socket setup for KvstashClient's `configure`: random routing id and CURVE keys. */
export function secureSocket(creds: DataCredentials, onRefused?: (why: string) => void): { routingId: Buffer; configure: (s: Dealer) => void } {
  const rid = randomBytes(16).toString('hex');
  return {
    routingId: Buffer.from(rid, 'latin1'),
    configure: (s: Dealer) => {
      s.routingId = rid;
      if (creds.curve) {
        s.curveServerKey = creds.curve.serverKey;
        s.curvePublicKey = creds.curve.publicKey;
        s.curveSecretKey = creds.curve.secretKey;
        if (onRefused) {
          s.events.on('handshake:error:auth', (ev) => onRefused(`the sidecar refused this CURVE key (ZAP status ${ev.error.status ?? '?'})`));
        }
      }
    },
  };
}

/** The AUTH request header for these credentials (token preferred when both are given). */
export function authHeader(creds: DataCredentials, routingId: Buffer, now = Date.now()): Record<string, unknown> {
  if (creds.token) return { op: AUTH_OP, method: 'token', key: tokenId(creds.token), ts: now, proof: authProof(creds.token, routingId, now) };
  if (creds.curve) {
    const secret = curveShared(creds.curve.secretKey, creds.curve.serverKey);
    return { op: AUTH_OP, method: 'curve', key: creds.curve.publicKey, ts: now, proof: authProof(secret, routingId, now) };
  }
  throw new KvstashError(ErrorCode.INVALID_ARGUMENT, 'credentials need a token or CURVE keys');
}

/**
 * Connect, authenticate and return the client. Rejects with KVS_UNAUTHENTICATED when the sidecar refuses the key
 * (ZAP) or the proof, KVS_TIMEOUT when nothing answers (wrong server key, sidecar down).
 */
export async function connectAuthenticated(endpoint: string, creds: DataCredentials, opts: ClientOptions = {}): Promise<{ client: KvstashClient; principal: string; tenants: string[] }> {
  let refused: ((why: string) => void) | undefined;
  const refusal = new Promise<never>((_, reject) => {
    refused = (why) => reject(new KvstashError(ErrorCode.UNAUTHENTICATED, why));
  });
  refusal.catch(() => undefined);
  const sec = secureSocket(creds, (why) => refused!(why));
  const client = new KvstashClient(endpoint, { ...opts, configure: (s) => { sec.configure(s); opts.configure?.(s); } });
  try {
    const r = await Promise.race([client.request(authHeader(creds, sec.routingId)), refusal]);
    return { client, principal: r.header.principal as string, tenants: r.header.tenants as string[] };
  } catch (err) {
    client.close();
    throw err;
  }
}
