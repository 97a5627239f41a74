/**
 * The vLLM KV-events index as a `kvstash` CLI extension: its settings, and the sidecar plugin, created only
 * when `vllmEvents` lists at least one publisher endpoint.
 *
 * `vllmEventsReplay` pairs with `vllmEvents` by position; `-` (or `none`) marks an endpoint without replay,
 * and a shorter list leaves the remaining endpoints without replay.
 */
import type { CliExtension } from '../../cli/extension.js';
import type { Config, Setting } from '../../connector/config.js';
import { ErrorCode, KvstashError } from '../../protocol/errors.js';
import { VllmEventsPlugin } from './events-plugin.js';
import type { VllmEventsIndexOptions } from './events-index.js';

function setting(key: string, kind: Setting['kind'], def: unknown, defDoc: string, describe: string): Setting {
  return {
    key, kind, def: () => (Array.isArray(def) ? [...def] : def), defDoc, describe,
    env: 'KVSTASH_' + key.replace(/([A-Z])/g, '_$1').toUpperCase(),
    flag: '--' + key.replace(/([A-Z])/g, '-$1').toLowerCase(),
  };
}

export const VLLM_EVENTS_SETTINGS: Setting[] = [
  setting('vllmEvents', 'list', [], 'none (index off)', 'vLLM KV-event publisher endpoints (PUB) to subscribe to, one per engine and DP rank (repeat the flag or comma-separate); `bind:<ep>` binds the SUB instead. Switches the KV-events index and the ENGINES op on.'),
  setting('vllmEventsReplay', 'list', [], 'none', 'Replay (ROUTER) endpoints of those publishers, in the same order; `-` for one without replay.'),
  setting('vllmEventsTopic', 'string', '', '`""` (all)', 'Topic prefix to subscribe to (vLLM `topic`).'),
  setting('vllmHashSeed', 'string', '0', '`0`', "The engines' PYTHONHASHSEED (vLLM must run with `--prefix-caching-hash-algo sha256_cbor`)."),
  setting('vllmBlockSize', 'int', 16, '16', "The engines' `--block-size` in tokens."),
  setting('vllmEventsMaxBlocks', 'int', 262_144, '262144', 'Most resident block hashes kept per engine and medium (~100 bytes each); the oldest go first.'),
  setting('vllmEventsReplayTimeoutMs', 'int', 3000, '3000', 'Deadline of one replay exchange with a publisher, ms; on expiry that engine is resynchronized.'),
];

/** Index options from a resolved config, or undefined when the index is switched off. */
export function vllmEventsOptions(config: Config): VllmEventsIndexOptions | undefined {
  const eps = (config.vllmEvents as string[] | undefined) ?? [];
  if (eps.length === 0) return undefined;
  const replay = (config.vllmEventsReplay as string[] | undefined) ?? [];
  if (replay.length > eps.length) {
    throw new KvstashError(ErrorCode.CONFIG, `vllmEventsReplay lists ${replay.length} endpoints but vllmEvents only ${eps.length}; they pair by position`);
  }
  const blockSize = config.vllmBlockSize as number;
  if (!(blockSize > 0)) throw new KvstashError(ErrorCode.CONFIG, `vllmBlockSize must be a positive integer, got ${blockSize}`);
  return {
    publishers: eps.map((endpoint, i) => {
      const r = replay[i];
      return r && r !== '-' && r !== 'none' ? { endpoint, replay: r } : { endpoint };
    }),
    topic: config.vllmEventsTopic as string,
    hashSeed: config.vllmHashSeed as string,
    blockSize,
    maxBlocksPerEngine: Math.max(1, config.vllmEventsMaxBlocks as number),
    replayTimeoutMs: Math.max(1, config.vllmEventsReplayTimeoutMs as number),
  };
}

export const vllmEventsExtension: CliExtension = {
  name: 'vllm-events',
  settings: VLLM_EVENTS_SETTINGS,
  plugins(config) {
    const opts = vllmEventsOptions(config);
    return opts ? [new VllmEventsPlugin(opts)] : [];
  },
};
