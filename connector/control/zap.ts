/**
 * ZAP (ZeroMQ RFC 27) handler: accepts or refuses CURVE client keys during the handshake.
 *
 * libzmq asks one handler per context, at inproc://zeromq.zap.01; every socket of this process uses the default
 * context, so the handler is a process-wide singleton. Each user registers a ZAP domain (set as the socket's
 * `zapDomain`) with a verifier; requests for an unknown domain or mechanism are refused (400).
 * zeromq.js cannot read the User-Id a ZAP reply attaches to messages, so the reply's user id is informative only
 * (the data socket binds principals with the AUTH op, see auth.ts).
 */
import { randomBytes } from 'node:crypto';
import { Router } from 'zeromq';
import { logger } from '../log.js';
import { z85Encode } from './auth.js';

/** Return the user id to accept the key, undefined to refuse it. */
export type KeyVerifier = (publicKeyZ85: string, address: string) => string | undefined;

const log = logger('auth');
const domains = new Map<string, KeyVerifier>();
let handler: Promise<Router> | undefined;
export const zapCounters = { accepted: 0, refused: 0 };

async function serve(sock: Router): Promise<void> {
  try {
    for await (const f of sock) {
      const [id, delim, version, reqId, domain, address, , mechanism, cred] = f as Buffer[];
      if (!id || !version || !reqId) continue;
      const verify = domains.get(String(domain ?? ''));
      let user: string | undefined;
      if (verify && String(mechanism) === 'CURVE' && cred?.length === 32) user = verify(z85Encode(cred), String(address ?? ''));
      if (user) zapCounters.accepted++;
      else zapCounters.refused++;
      log.tr({ domain: String(domain), mechanism: String(mechanism), address: String(address), ok: user !== undefined }, 'zap request');
      await sock.send([id, delim ?? Buffer.alloc(0), '1.0', reqId, user ? '200' : '400', user ? 'OK' : 'key not allowed', user ?? '', Buffer.alloc(0)]);
    }
  } catch {
    /* closed */
  }
}

/** Register a verifier; returns the ZAP domain to set on the socket (before bind). */
export async function registerZapDomain(verify: KeyVerifier, name = 'kvstash'): Promise<string> {
  handler ??= (async () => {
    const sock = new Router({ linger: 0 });
    await sock.bind('inproc://zeromq.zap.01');
    void serve(sock);
    return sock;
  })();
  await handler;
  const domain = `${name}-${randomBytes(6).toString('hex')}`;
  domains.set(domain, verify);
  return domain;
}

export function unregisterZapDomain(domain: string): void {
  domains.delete(domain);
  if (domains.size === 0 && handler) {
    const h = handler;
    handler = undefined;
    void h.then((sock) => sock.close(), () => undefined);
  }
}
