/**
 * CLI extension of the RESP (Redis protocol) front: settings `resp` (flag --resp, env KVSTASH_RESP: comma-separated
 * `host:port`), `respTenant`, `respDatabases`, `respMaxBufferedBytes`, `respStallMs`. With `resp` empty (the
 * default) no plugin is started. Auth follows the control plane's `authTokens` (see server.ts).
 *
 *   kvstash serve --resp 127.0.0.1:6379
 */
import type { CliExtension } from '../../cli/extension.js';
import type { Config, Setting } from '../../connector/config.js';
import { policyFromConfig } from '../../connector/control/settings.js';
import { parseRespListen, RespServer } from './server.js';

const setting = (key: string, kind: Setting['kind'], def: unknown, defDoc: string, describe: string): Setting => ({
  key, kind, def: () => def, defDoc, describe,
  env: 'KVSTASH_' + key.replace(/([A-Z])/g, '_$1').toUpperCase(),
  flag: '--' + key.replace(/([A-Z])/g, '-$1').toLowerCase(),
});

export const respExtension: CliExtension = {
  name: 'resp',
  settings: [
    setting('resp', 'list', [], 'none (off)', 'Redis-protocol (RESP2/RESP3) listeners, `host:port`: unmodified Redis clients (LMCache `remote_url: "redis://host:port"`, redis-cli, redis-benchmark) store values in the tiers. See docs/stock-engines.md.'),
    setting('respTenant', 'string', 'default', 'default', 'Tenant of RESP connections without AUTH (auth off) and of AUTH without a user name.'),
    setting('respDatabases', 'int', 16, '16', 'RESP databases (SELECT 0..n-1); one namespace per database per tenant.'),
    setting('respMaxBufferedBytes', 'bytes', 2 ** 30, '1 GiB', 'Global cap on bytes held for incomplete RESP requests across all connections; a request that would pass it gets `-ERR Protocol error` and its connection is closed.'),
    setting('respStallMs', 'int', 10000, '10000', 'Close a RESP connection whose request stays incomplete with no new bytes this long, ms.'),
  ],
  plugins(config: Config) {
    const specs = (config.resp as string[] | undefined) ?? [];
    if (specs.length === 0) return [];
    return [new RespServer({
      listen: specs.map(parseRespListen), policy: policyFromConfig(config), tenant: config.respTenant as string,
      databases: config.respDatabases as number, maxBufferedBytes: config.respMaxBufferedBytes as number,
      stallMs: config.respStallMs as number, announce: (line) => process.stdout.write(line + '\n'),
    })];
  },
};
