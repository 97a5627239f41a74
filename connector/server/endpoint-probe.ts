/**
 * Endpoint probe — is a data-socket endpoint already served by a live process? Run before anything else at
 * start-up (before the tier stack opens its folders), so a second `kvstash serve` on the same endpoints
 * refuses to start instead of taking the first one's socket (issue 9 item 6).
 *
 * Rules:
 * - `ipc://path`: libzmq unlinks an existing socket file before it binds (src/ipc_listener.cpp), which would
 *   silently cut a running sidecar off its engines. So: connect to the path first. A connection accepted → a
 *   live process holds it → KVS_CONFIG, and the file is left alone. ECONNREFUSED (a stale file from a killed
 *   process) or ENOENT → free: libzmq may replace it. Abstract sockets (`ipc://@name`) are not probed (bind
 *   fails on its own when taken).
 * - `tcp://host:port` with a fixed port: a connection accepted → KVS_CONFIG (bind would fail later anyway, but
 *   only after the tier stack was opened). Wildcard hosts are probed on loopback; port 0 and `*` ports are not.
 * - A probe that gets no answer within `timeoutMs` (a stopped process holding the socket) counts as live.
 * - Two processes starting at the same instant may both see the endpoint free; one of them then fails to bind
 *   (tcp) or replaces the other's file (ipc): start sidecars one at a time.
 */
import net from 'node:net';
import { ErrorCode, KvstashError } from '../../protocol/errors.js';

type Probe = { path: string } | { host: string; port: number };

function target(ep: string): Probe | undefined {
  if (ep.startsWith('ipc://')) {
    const p = ep.slice(6);
    return p.startsWith('@') || p === '' ? undefined : { path: p };
  }
  const m = /^tcp:\/\/(\[[^\]]+\]|[^:]+):(\d+)$/.exec(ep);
  if (!m || Number(m[2]) === 0) return undefined;
  const host = m[1]!.replace(/^\[|\]$/g, '');
  return { host: host === '*' || host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '::1' : host, port: Number(m[2]) };
}

/** 'live' when a process accepts connections on `ep`, 'free' otherwise. */
export function probeEndpoint(ep: string, timeoutMs = 1000): Promise<'live' | 'free'> {
  const t = target(ep);
  if (!t) return Promise.resolve('free');
  return new Promise((resolve) => {
    const sock = net.connect(t as net.NetConnectOpts);
    const done = (v: 'live' | 'free') => { clearTimeout(timer); sock.destroy(); resolve(v); };
    const timer = setTimeout(() => done('live'), timeoutMs);
    sock.once('connect', () => done('live'));
    sock.once('error', (err: NodeJS.ErrnoException) => done(err.code === 'ETIMEDOUT' ? 'live' : 'free'));
  });
}

/** Throw KVS_CONFIG when any endpoint is held by a live process. */
export async function assertEndpointsFree(endpoints: string[], timeoutMs?: number): Promise<void> {
  for (const ep of endpoints) {
    if ((await probeEndpoint(ep, timeoutMs)) === 'live') {
      throw new KvstashError(ErrorCode.CONFIG, `endpoint ${ep} is in use by a live process (another kvstash sidecar?); refusing to start so as not to take its socket`);
    }
  }
}
