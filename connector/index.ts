/**
 * kvstash's public entry (`import { KvstashClient } from 'kvstash'`): the data-socket client, the error type with
 * its stable codes, and the wire types. Other public entries: `kvstash/errors`, `kvstash/wire` and the
 * EXPERIMENTAL driver SDK `kvstash/driver` (connector/storage/sdk.ts). Everything else is internal.
 */
export { KvstashClient, type ClientOptions, type Reply } from './client.js';
export { ErrorCode, KvstashError, isErrorCode, toKvstashError } from '../protocol/errors.js';
export * from '../protocol/wire.js';
export { VERSION } from './version.js';
