/**
 * CLI extension of the lm:// server: settings `lmcache` (flag --lmcache, env KVSTASH_LMCACHE: comma-separated
 * `host:port` or `host:port/generation`, generation auto|legacy|v1-early|v1), `lmcacheTenant` and
 * `lmcacheStallMs`. With `lmcache` empty (the default) no plugin is started.
 *
 *   kvstash serve --lmcache 127.0.0.1:65432
 */
import type { CliExtension } from '../../connector/cli-extension.js';
import type { Config, Setting } from '../../connector/config.js';
import { LmcacheServer, parseListenSpec } from './server.js';

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
    setting('lmcacheStallMs', 'int', 2000, '2000', 'Close an lm:// connection whose request header stays incomplete this long, ms (catches clients of a shorter header generation, which would otherwise wait forever).'),
  ],
  plugins(config: Config) {
    const specs = (config.lmcache as string[] | undefined) ?? [];
    if (specs.length === 0) return [];
    return [new LmcacheServer({
      listen: specs.map(parseListenSpec), tenant: config.lmcacheTenant as string, stallMs: config.lmcacheStallMs as number,
      announce: (line) => process.stdout.write(line + '\n'),
    })];
  },
};
