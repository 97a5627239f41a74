/**
 * CLI extension of the lm:// server: settings `lmcache` (flag --lmcache, env KVSTASH_LMCACHE: comma-separated
 * `host:port` or `host:port/generation`, generation auto|legacy|v1-early|v1), `lmcacheTenant`, the deadlines
 * `lmcacheStallMs` / `lmcacheRequestMs`, the memory cap `lmcacheMaxBufferedBytes` and
 * `lmcacheAllowUnauthenticated`. With `lmcache` empty (the default) no plugin is started.
 *
 *   kvstash serve --lmcache 127.0.0.1:65432
 */
import type { CliExtension } from '../../cli/extension.js';
import type { Config, Setting } from '../../connector/config.js';
import { ErrorCode, KvstashError } from '../../protocol/errors.js';
import { LmcacheServer, parseListenSpec } from './server.js';

const nonEmpty = (v: unknown) => v !== null && v !== undefined && v !== '' && typeof v === 'object' && Object.keys(v).length > 0;

const setting = (key: string, kind: Setting['kind'], def: unknown, defDoc: string, describe: string): Setting => ({
  key, kind, def: () => def, defDoc, describe,
  env: 'KVSTASH_' + key.replace(/([A-Z])/g, '_$1').toUpperCase(),
  flag: '--' + key.replace(/([A-Z])/g, '-$1').toLowerCase(),
});

export const lmcacheExtension: CliExtension = {
  name: 'lmcache',
  settings: [
    setting('lmcache', 'list', [], 'none (off)', 'LMCache `lm://` server listeners: `host:port` or `host:port/generation` (generation `auto`, `legacy`, `v1-early`, `v1` or `v1-loc5` — v1 requests, replies with `location` 5th for LMCache @ 0851d06c clients, never auto-detected; default auto-detects per connection). Point LMCache at it with `remote_url: "lm://host:port"`.'),
    setting('lmcacheTenant', 'string', 'default', 'default', 'Tenant of the lm:// namespaces (all LMCache clients of this sidecar share it).'),
    setting('lmcacheStallMs', 'int', 2000, '2000', 'Close an lm:// connection whose request header is still incomplete this long after its first byte, ms (catches clients of a shorter header generation, which would otherwise wait forever, and header tricklers).'),
    setting('lmcacheRequestMs', 'int', 30000, '30000', 'Close an lm:// connection whose request (header and payload) is still incomplete this long after its first byte, ms (slow or stalled senders).'),
    setting('lmcacheMaxBufferedBytes', 'bytes', 2 ** 30, '1 GiB', 'Cap on PUT payload bytes the lm:// server buffers across all connections; beyond it new PUTs are refused (skipped, counted as `refusedPuts`; a later GET misses).'),
    setting('lmcacheAllowUnauthenticated', 'bool', false, 'false', 'Serve lm:// although auth is on (`authTokens`/`curveClients`). LMCache\'s lm:// client sends no credentials, so with auth on the lm:// server refuses to start unless this is true; then bind it to loopback or a trusted network only.'),
  ],
  plugins(config: Config) {
    const specs = (config.lmcache as string[] | undefined) ?? [];
    if (specs.length === 0) return [];
    // LMCache's LMCServerConnector opens a bare TCP socket and writes headers: no field or handshake can carry
    // a credential (lmcache/v1/storage_backend/connector/lm_connector.py @ 0e65d2fc: `socket.connect` then headers). So auth on = lm:// off,
    // unless the operator says otherwise (issue 9 item 8).
    const authOn = nonEmpty(config.authTokens) || nonEmpty(config.curveClients);
    if (authOn && config.lmcacheAllowUnauthenticated !== true) {
      throw new KvstashError(ErrorCode.CONFIG, 'lmcache: auth is on (authTokens/curveClients) but LMCache\'s lm:// client cannot send credentials; set lmcacheAllowUnauthenticated=true to serve lm:// anyway (loopback or a trusted network only), or drop --lmcache');
    }
    return [new LmcacheServer({
      listen: specs.map(parseListenSpec), tenant: config.lmcacheTenant as string, stallMs: config.lmcacheStallMs as number,
      requestMs: config.lmcacheRequestMs as number, maxBufferedBytes: config.lmcacheMaxBufferedBytes as number,
      announce: (line) => process.stdout.write(line + '\n'),
    })];
  },
};
