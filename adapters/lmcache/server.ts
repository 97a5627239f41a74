/**
 * LmcacheServer — a drop-in replacement for LMCache's `lm://` remote server (`lmcache_server <host> <port>`),
 * as a sidecar plugin: objects live in the sidecar's tier stack (DRAM → file → …), with budgets and eviction,
 * instead of LMCache's never-evicting dict.
 *
 * - One node:net listener per `host:port[/generation]` (generation auto|legacy|v1-early|v1; auto sniffs each
 *   connection's first request). Port 0 picks a free port: `bound` lists the real addresses, `announce` is
 *   called with a line per listener.
 * - Commands: PUT (stored, no reply), GET (stored metadata echoed exactly, then the payload), EXIST, HEALTH
 *   (answered in every generation, although LMCache's legacy server has none), LIST: keys joined by "\n".
 *   LMCache's v1 servers ignore LIST and their connectors never send it; kvstash answers it in v1 generations
 *   too, under that generation's reply header (code 200, length n, fmt 1, dtype 2, zero shape, location 0),
 *   so a client that asks is not left waiting forever.
 * - Key strings for LIST: adapters/lmcache/key-index.ts (persisted under `<fileRoot>/lmcache/` when the
 *   sidecar has a file root).
 * - LMCache's client never reconnects (pitfall §6.7): restarting the sidecar needs the engines restarted too.
 * - Op LMCACHE_STATS on the sidecar's data socket returns this server's counters.
 */
import net from 'node:net';
import path from 'node:path';
import type { Logger } from 'pino';
import { ErrorCode, KvstashError } from '../../protocol/errors.js';
import { logger } from '../../connector/log.js';
import type { PluginHost, SidecarPlugin } from '../../connector/server/sidecar.js';
import { LmConnection, type LmCounters } from './connection.js';
import { LmMemoryBudget } from './memory-budget.js';
import { LISTEN_SETTINGS, type LmListenSetting } from './protocol.js';
import { LmStore } from './store.js';

export interface LmListenSpec {
  host: string;
  port: number;
  generation: LmListenSetting;
}

/** Parse `host:port` or `host:port/generation` (IPv6 as `[::1]:port`). Throws KVS_CONFIG. */
export function parseListenSpec(spec: string): LmListenSpec {
  const m = /^(\[[^\]]+\]|[^:/\s]+):(\d{1,5})(?:\/([a-z0-9-]+))?$/.exec(spec.trim());
  const gen = (m?.[3] ?? 'auto') as LmListenSetting;
  if (!m || Number(m[2]) > 65535 || !LISTEN_SETTINGS.includes(gen)) {
    throw new KvstashError(ErrorCode.CONFIG, `lmcache: expected host:port or host:port/generation with generation one of ${LISTEN_SETTINGS.join(', ')}; got ${JSON.stringify(spec)}`);
  }
  return { host: m[1]!.replace(/^\[|\]$/g, ''), port: Number(m[2]), generation: gen };
}

export interface LmcacheServerOptions {
  listen: LmListenSpec[];
  /** Tenant of the lm:// namespaces. Default "default". */
  tenant?: string;
  /** Close a connection whose request header is still incomplete this long after its first byte. Default 2000 ms. */
  stallMs?: number;
  /** Close a connection whose request (header and payload) is still incomplete this long after its first byte. Default 30000 ms. */
  requestMs?: number;
  /** Cap on PUT payload bytes buffered across all connections (memory-budget.ts). Default 1 GiB. */
  maxBufferedBytes?: number;
  /** Replies with a payload below this size are concatenated; larger ones are corked (bench/lmcache.ts). Default 64 KiB. */
  concatBelow?: number;
  /** Persist key strings for LIST under `<fileRoot>/lmcache/`. Default true (when the sidecar has a fileRoot). */
  persistKeys?: boolean;
  announce?: (line: string) => void;
  /** Logger (default: category "lmcache" at the sidecar's log level). */
  log?: Logger;
}

export class LmcacheServer implements SidecarPlugin {
  readonly name = 'lmcache';
  readonly counters: LmCounters = {
    connections: 0, requests: 0, puts: 0, stored: 0, droppedPuts: 0, gets: 0, hits: 0, misses: 0, exists: 0,
    lists: 0, health: 0, unknown: 0, protocolErrors: 0, timeouts: 0,
  };
  readonly budget: LmMemoryBudget;
  readonly bound: { host: string; port: number; generation: LmListenSetting; url: string }[] = [];
  private readonly servers: net.Server[] = [];
  private readonly sockets = new Set<net.Socket>();
  private store: LmStore | undefined;
  private log: Logger;

  constructor(readonly opts: LmcacheServerOptions) {
    this.log = opts.log ?? logger('lmcache');
    this.budget = new LmMemoryBudget(opts.maxBufferedBytes ?? 2 ** 30);
  }

  async start(sidecar: PluginHost): Promise<void> {
    if (!this.opts.log) this.log.level = sidecar.config.logLevel;
    const root = sidecar.config.fileRoot;
    const dir = root && this.opts.persistKeys !== false ? path.join(root, 'lmcache') : undefined;
    const store = new LmStore(sidecar, this.opts.tenant ?? 'default', dir, this.log);
    store.open();
    this.store = store;
    sidecar.registerOp('LMCACHE_STATS', () => ({ lmcache: this.stats() }));
    for (const spec of this.opts.listen) {
      const copts = {
        generation: spec.generation, maxPayloadBytes: sidecar.limits.maxBlockBytes,
        stallMs: this.opts.stallMs ?? 2000, requestMs: this.opts.requestMs ?? 30_000, concatBelow: this.opts.concatBelow ?? 64 * 1024,
        budget: this.budget,
      };
      const server = net.createServer((sock) => {
        this.sockets.add(sock);
        sock.on('close', () => this.sockets.delete(sock));
        new LmConnection(sock, store, copts, this.log, this.counters);
      });
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(spec.port, spec.host, () => {
          server.off('error', reject);
          resolve();
        });
      }).catch(async (err: Error) => {
        await this.stop();
        throw new KvstashError(ErrorCode.CONFIG, `lmcache: cannot listen on ${spec.host}:${spec.port}: ${err.message}`, { cause: err });
      });
      server.on('error', (err) => this.log.error({ err }, 'lm:// listener error'));
      this.servers.push(server);
      const port = (server.address() as net.AddressInfo).port;
      const url = `lm://${spec.host.includes(':') ? `[${spec.host}]` : spec.host}:${port}`;
      this.bound.push({ host: spec.host, port, generation: spec.generation, url });
      this.log.info({ url, generation: spec.generation }, 'lm:// server listening');
      this.opts.announce?.(`lmcache lm:// server listening on ${url} (generation ${spec.generation})`);
    }
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await Promise.all(this.servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
    this.servers.length = 0;
    await this.store?.close();
  }

  stats(): Record<string, unknown> {
    return { ...this.counters, refusedPuts: this.budget.refusals, open_connections: this.sockets.size, buffered_bytes: this.budget.used, buffered_peak_bytes: this.budget.peak, buffered_cap_bytes: this.budget.capBytes, undecodable: this.store?.counters.undecodable ?? 0, listeners: this.bound.map((b) => ({ url: b.url, generation: b.generation })) };
  }
}
