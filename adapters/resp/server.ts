/**
 * RespServer — a Redis-protocol front on the sidecar's tier stack, as a sidecar plugin, so unmodified Redis
 * clients reach kvstash: LMCache's `redis://` remote connector (redis-py; checked against
 * LMCache/LMCache@030c771 `lmcache/v1/storage_backend/connector/redis_connector.py`: GET/SET/EXISTS/DEL on
 * `<key>kv_bytes` and `<key>metadata`), redis-cli and redis-benchmark (Debian redis-tools 7.0).
 *
 * - One node:net listener per `host:port` (port 0 picks one: `bound` lists the real addresses).
 * - Commands and their replies: commands.ts. Wire format and limits: codec.ts. One connection: connection.ts.
 * - Auth: with kvstash auth on (`authTokens`), a connection must AUTH (or HELLO … AUTH) before any data
 *   command; the password is a kvstash bearer token and the user names the tenant (`default` → `respTenant`).
 *   With auth off (loopback default) every connection is the `respTenant` tenant with control-plane rights.
 * - Op RESP_STATS on the data socket returns this server's counters.
 */
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Logger } from 'pino';
import { LOCAL, type AccessPolicy } from '../../connector/control/auth.js';
import { logger } from '../../connector/log.js';
import type { Sidecar, SidecarPlugin } from '../../connector/server/sidecar.js';
import { ErrorCode, KvstashError } from '../../protocol/errors.js';
import { ByteBudget } from './codec.js';
import type { CommandContext, Session } from './commands.js';
import { RespConnection } from './connection.js';
import { RespStore } from './store.js';

export interface RespListenSpec { host: string; port: number }

/** Parse `host:port` (IPv6 as `[::1]:port`). Throws KVS_CONFIG. */
export function parseRespListen(spec: string): RespListenSpec {
  const m = /^(\[[^\]]+\]|[^:/\s]+):(\d{1,5})$/.exec(spec.trim());
  if (!m || Number(m[2]) > 65535) throw new KvstashError(ErrorCode.CONFIG, `resp: expected host:port, got ${JSON.stringify(spec)}`);
  return { host: m[1]!.replace(/^\[|\]$/g, ''), port: Number(m[2]) };
}

export interface RespServerOptions {
  listen: RespListenSpec[];
  policy: AccessPolicy;
  /** Tenant of unauthenticated connections (auth off) and of AUTH without a user name. Default "default". */
  tenant?: string;
  /** SELECT range. Default 16. */
  databases?: number;
  /** Global cap on bytes held for incomplete requests across all connections. Default 1 GiB. */
  maxBufferedBytes?: number;
  /** Close a connection whose request stays incomplete with no new bytes this long. Default 10000 ms. */
  stallMs?: number;
  /** Pause reading while a connection has this many reply bytes unsent. Default 32 MiB. */
  highWaterBytes?: number;
  /** Persist key names under `<fileRoot>/resp/`. Default true (when the sidecar has a file root). */
  persistKeys?: boolean;
  announce?: (line: string) => void;
  log?: Logger;
}

export class RespServer implements SidecarPlugin {
  readonly name = 'resp';
  readonly counters = { connections: 0, commands: 0, hits: 0, misses: 0, sets: 0, dropped: 0, errors: 0, protocolErrors: 0 };
  readonly bound: { host: string; port: number; url: string }[] = [];
  readonly budget: ByteBudget;
  private readonly servers: net.Server[] = [];
  private readonly sockets = new Set<net.Socket>();
  private store: RespStore | undefined;
  private nextId = 1;
  private readonly log: Logger;
  private readonly startedAt = Date.now();

  constructor(readonly opts: RespServerOptions) {
    this.log = opts.log ?? logger('resp');
    this.budget = new ByteBudget(opts.maxBufferedBytes ?? 2 ** 30);
  }

  async start(sidecar: Sidecar): Promise<void> {
    if (!this.opts.log) this.log.level = sidecar.config.logLevel;
    const root = sidecar.config.fileRoot;
    const dir = root && this.opts.persistKeys !== false ? path.join(root, 'resp') : undefined;
    const databases = this.opts.databases ?? 16;
    const store = new RespStore(sidecar, databases, dir, this.log);
    store.open();
    this.store = store;
    sidecar.registerOp('RESP_STATS', () => ({ resp: this.stats() }));
    const tenant = this.opts.tenant ?? 'default';
    const ctx: CommandContext = {
      store, policy: this.opts.policy, defaultTenant: tenant, databases, counters: this.counters,
      info: (section) => this.info(sidecar, section),
    };
    const copts = {
      limits: { maxArgs: 1024 * 1024, maxBulkBytes: sidecar.limits.maxBlockBytes }, budget: this.budget,
      stallMs: this.opts.stallMs ?? 10_000, highWaterBytes: this.opts.highWaterBytes ?? 32 * 2 ** 20,
    };
    for (const spec of this.opts.listen) {
      const server = net.createServer((sock) => {
        this.sockets.add(sock);
        this.counters.connections++;
        sock.on('close', () => this.sockets.delete(sock));
        const session: Session = {
          id: this.nextId++, db: 0, tenant, principal: this.opts.policy.enabled ? undefined : LOCAL, proto: 2, name: '', quit: false,
        };
        new RespConnection(sock, ctx, session, copts, this.log, () => this.counters.protocolErrors++);
      });
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(spec.port, spec.host, () => {
          server.off('error', reject);
          resolve();
        });
      }).catch(async (err: Error) => {
        await this.stop();
        throw new KvstashError(ErrorCode.CONFIG, `resp: cannot listen on ${spec.host}:${spec.port}: ${err.message}`, { cause: err });
      });
      server.on('error', (err) => this.log.error({ err }, 'resp listener error'));
      this.servers.push(server);
      const port = (server.address() as net.AddressInfo).port;
      const url = `redis://${spec.host.includes(':') ? `[${spec.host}]` : spec.host}:${port}`;
      this.bound.push({ host: spec.host, port, url });
      this.log.info({ url }, 'resp server listening');
      this.opts.announce?.(`resp (Redis protocol) server listening on ${url}`);
    }
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await Promise.all(this.servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
    this.servers.length = 0;
    await this.store?.close();
  }

  stats(): Record<string, unknown> {
    return { ...this.counters, open_connections: this.sockets.size, buffered_bytes: this.budget.used, buffered_cap: this.budget.limit, listeners: this.bound.map((b) => b.url) };
  }

  private info(sidecar: Sidecar, section: string): string {
    const dram = sidecar.tiers.stats()[0]!;
    const all = section === 'all' || section === 'everything' || section === 'default';
    const out: string[] = [];
    const add = (name: string, lines: [string, string | number][]) => {
      if (!all && section !== name.toLowerCase()) return;
      out.push(`# ${name}`, ...lines.map(([k, v]) => `${k}:${v}`), '');
    };
    add('Server', [['redis_version', '7.0.0'], ['kvstash_version', '0.1.0'], ['redis_mode', 'standalone'], ['os', `${os.type()} ${os.release()}`],
      ['process_id', process.pid], ['tcp_port', this.bound[0]?.port ?? 0], ['uptime_in_seconds', Math.round((Date.now() - this.startedAt) / 1000)]]);
    add('Clients', [['connected_clients', this.sockets.size], ['query_buffered_bytes', this.budget.used], ['query_buffered_cap', this.budget.limit]]);
    add('Memory', [['used_memory', dram.bytes], ['maxmemory', dram.budgetBytes], ['maxmemory_policy', 'kvstash-heat']]);
    add('Stats', [['total_connections_received', this.counters.connections], ['total_commands_processed', this.counters.commands],
      ['keyspace_hits', this.counters.hits], ['keyspace_misses', this.counters.misses], ['kvstash_dropped_sets', this.counters.dropped],
      ['kvstash_protocol_errors', this.counters.protocolErrors]]);
    const ks: [string, string][] = [];
    for (const { id, desc } of this.store?.namespaces() ?? []) {
      const n = this.store!.keys(id).length;
      if (n > 0) ks.push([`${desc.layout}${desc.tenant === (this.opts.tenant ?? 'default') ? '' : `@${desc.tenant}`}`, `keys=${n},expires=0,avg_ttl=0`]);
    }
    add('Keyspace', ks);
    return out.join('\r\n');
  }
}
