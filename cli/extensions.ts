/** The CLI extensions compiled into `kvstash`. Each adapter owns its own extension file. */
import type { CliExtension } from './extension.js';
import { vllmEventsExtension } from '../adapters/vllm/cli-extension.js';
import { lmcacheExtension } from '../adapters/lmcache/cli-extension.js';
import { controlExtension } from './control.js';
import { storageExtension } from './storage.js';
import { respExtension } from '../adapters/resp/cli-extension.js';
import { vllmOffloadExtension } from '../adapters/vllm-offload/cli-extension.js';
import { janitorExtension } from '../adapters/janitor/cli-extension.js';

export const EXTENSIONS: CliExtension[] = [vllmEventsExtension, lmcacheExtension, storageExtension, controlExtension, respExtension, vllmOffloadExtension, janitorExtension];
