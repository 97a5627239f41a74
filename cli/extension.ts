/**
 * CliExtension — how adapters and the control plane plug into the `kvstash` CLI without editing it.
 *
 * Rules:
 * - `settings` are resolved like the core ones (flag > env > config file > default) and appear in
 *   docs/configuration.md; each becomes a `serve` flag automatically.
 * - `plugins` builds the sidecar plugins from the resolved config; return [] when switched off.
 * - `commands` adds top-level subcommands; each must support `--help` and `--json` where it prints data,
 *   and exit with 0 on success, 1 on an operational error, 2 on bad usage.
 */
import type { Command } from 'commander';
import type { Config, Setting } from '../connector/config.js';
import type { SidecarPlugin } from '../connector/server/sidecar.js';

export interface CliExtension {
  readonly name: string;
  readonly settings?: Setting[];
  plugins?(config: Config): SidecarPlugin[] | Promise<SidecarPlugin[]>;
  commands?(program: Command): void;
}
