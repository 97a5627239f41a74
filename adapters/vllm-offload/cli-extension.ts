/**
 * CLI extension of the vLLM OffloadingConnector secondary tier (plugin.ts): setting `vllmOffload` (flag
 * --vllm-offload, env KVSTASH_VLLM_OFFLOAD): the path prefixes of primary-tier files the sidecar may read and
 * write, comma-separated. Empty (the default): off.
 *
 *   kvstash serve --vllm-offload /dev/shm/vllm_offload_
 */
import type { CliExtension } from '../../cli/extension.js';
import type { Config } from '../../connector/config.js';
import { VllmOffloadPlugin } from './plugin.js';

export const vllmOffloadExtension: CliExtension = {
  name: 'vllm-offload',
  settings: [{
    key: 'vllmOffload', kind: 'list', def: () => [], defDoc: 'none (off)', env: 'KVSTASH_VLLM_OFFLOAD', flag: '--vllm-offload',
    describe: 'vLLM OffloadingConnector secondary tier (kvstash.vllm_offload): path prefixes of the shared CPU primary-tier files the sidecar may read and write, e.g. `/dev/shm/vllm_offload_`. See docs/stock-engines.md.',
  }],
  plugins(config: Config) {
    const prefixes = (config.vllmOffload as string[] | undefined) ?? [];
    return prefixes.length ? [new VllmOffloadPlugin({ pathPrefixes: prefixes })] : [];
  },
};
