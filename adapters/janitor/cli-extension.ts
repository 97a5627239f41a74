/**
 * CLI extension of the folder janitor (janitor.ts): settings `adoptDir` (flag --adopt-dir, env KVSTASH_ADOPT_DIR:
 * comma-separated `<path>:<layout>`, layout `vllm-fs` or `sglang-file`), `adoptBytes` (byte budget of each
 * folder), `adoptMinAgeMs` (files modified more recently are never removed). Empty `adoptDir` (default): off.
 *
 *   kvstash serve --adopt-dir /nvme/vllm_kv:vllm-fs --adopt-bytes 500GiB
 */
import type { CliExtension } from '../../cli/extension.js';
import type { Config, Setting } from '../../connector/config.js';
import { FolderJanitor, LAYOUTS, parseAdoptSpec } from './janitor.js';

const setting = (key: string, kind: Setting['kind'], def: unknown, defDoc: string, describe: string): Setting => ({
  key, kind, def: () => def, defDoc, describe,
  env: 'KVSTASH_' + key.replace(/([A-Z])/g, '_$1').toUpperCase(),
  flag: '--' + key.replace(/([A-Z])/g, '-$1').toLowerCase(),
});

export const janitorExtension: CliExtension = {
  name: 'janitor',
  settings: [
    setting('adoptDir', 'list', [], 'none (off)', `Folders engines write themselves, taken under management: \`<path>:<layout>\`, layout ${Object.keys(LAYOUTS).map((l) => `\`${l}\``).join(' or ')}. Heat-based eviction to \`adoptBytes\`; only files of the layout are touched.`),
    setting('adoptBytes', 'bytes', 100 * 2 ** 30, '100 GiB', 'Byte budget of each adopted folder.'),
    setting('adoptMinAgeMs', 'int', 60_000, '60000', 'Adopted files modified more recently than this are never removed (an engine may be writing them), ms.'),
  ],
  plugins(config: Config) {
    const specs = (config.adoptDir as string[] | undefined) ?? [];
    return specs.map((s) => new FolderJanitor({ ...parseAdoptSpec(s), budgetBytes: config.adoptBytes as number, minAgeMs: config.adoptMinAgeMs as number }));
  },
};
