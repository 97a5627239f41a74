/** The CLI extensions compiled into `kvstash`. Each adapter owns its own extension file. */
import type { CliExtension } from './cli-extension.js';

export const EXTENSIONS: CliExtension[] = [];
