/**
 * CLI extension of the folder janitor (janitor.ts): settings `adoptDir` (flag --adopt-dir, env KVSTASH_ADOPT_DIR:
 * comma-separated `<path>:<layout>`, layout `vllm-fs` or `sglang-file`), `adoptBytes` (byte budget of each
 * folder), `adoptMinAgeMs` (files modified more recently are never removed), `adoptDemote` (JSON driver spec: evicted
 * files are demoted there instead of deleted), `adoptWatch` (inotify on/off). Empty `adoptDir` (default): off.
 * Commands: `kvstash adopt restore|stats` (adopt-cli.ts).
 *
 *   kvstash serve --adopt-dir /nvme/vllm_kv:vllm-fs --adopt-bytes 500GiB --adopt-demote '{"driver":"nfs","root":"/mnt/nfs/kv"}'
 */
import type { CliExtension } from '../../cli/extension.js';
import type { Config, Setting } from '../../connector/config.js';
import { adoptCommands } from './adopt-cli.js';
import { parseDemoteSpec } from './demote.js';
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
    setting('adoptDemote', 'json', null, 'none (evicted files are deleted)', 'JSON storage-driver spec, e.g. `{"driver":"nfs","root":"/mnt/nfs/kv"}` or `{"driver":"s3","bucket":"kv",…}`: files the janitor evicts are demoted there instead of deleted; `kvstash adopt restore` puts them back. The target\'s listing is the manifest.'),
    setting('adoptWatch', 'bool', true, 'true', 'Watch adopted folders with inotifywait (inotify-tools) for reads and writes; false: heat from mtimes only (folders inotify does not see, e.g. NFS).'),
  ],
  plugins(config: Config) {
    const specs = (config.adoptDir as string[] | undefined) ?? [];
    const raw = config.adoptDemote as string | Record<string, unknown> | null | undefined;
    const demote = raw === null || raw === undefined || raw === '' ? undefined : parseDemoteSpec(raw);
    return specs.map((s) => new FolderJanitor({
      ...parseAdoptSpec(s), budgetBytes: config.adoptBytes as number, minAgeMs: config.adoptMinAgeMs as number, demote, watch: config.adoptWatch as boolean,
    }));
  },
  commands: adoptCommands,
};
