/**
 * Settings of the control plane, metrics, tier events and auth (a CliExtension's settings: they resolve like
 * the core ones — flag > env > config file > default — and are listed in docs/configuration.md and
 * docs/environment.md).
 */
import { timingSafeEqual } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { ErrorCode, KvstashError } from '../../protocol/errors.js';
import type { Config, Setting } from '../config.js';
import { AccessPolicy } from './auth.js';

function setting(key: string, kind: Setting['kind'], def: unknown, defDoc: string, describe: string): Setting {
  return {
    key, kind, def: () => def, defDoc, describe,
    env: 'KVSTASH_' + key.replace(/([A-Z])/g, '_$1').toUpperCase(),
    flag: '--' + key.replace(/([A-Z])/g, '-$1').toLowerCase(),
  };
}

export const CONTROL_SETTINGS: Setting[] = [
  setting('grpc', 'string', '127.0.0.1:5600', '`127.0.0.1:5600`', 'gRPC control-plane address (host:port, port 0 picks one); empty string disables it.'),
  setting('grpcTlsCert', 'string', '', 'none (plaintext)', 'PEM certificate chain file: serve gRPC over TLS.'),
  setting('grpcTlsKey', 'string', '', 'none', 'PEM private key file of `grpcTlsCert`.'),
  setting('grpcTlsClientCa', 'string', '', 'none', 'PEM CA file: require client certificates signed by it (mutual TLS).'),
  setting('grpcStreamBuffer', 'int', 1024, '1024', 'Tier events a WatchTierEvents stream holds back for a slow consumer before dropping (counted).'),
  setting('pinBudgetBytes', 'string', '', 'half of `dramBytes`', 'Bytes that pinned blocks may occupy; Pin beyond it fails with KVS_RESOURCE_EXHAUSTED.'),
  setting('metrics', 'string', '127.0.0.1:9464', '`127.0.0.1:9464`', 'Prometheus `/metrics` HTTP address (host:port); empty string disables it.'),
  setting('metricsTopNamespaces', 'int', 20, '20', 'Namespaces with their own per-namespace series; the others are summed as namespace="other".'),
  setting('metricsToken', 'string', '', 'none', 'Bearer token `/metrics` requires (`Authorization: Bearer <token>`), or `@file` holding it. Without it, while auth is on, an operator token (tenants `"*"`) of `authTokens` is required.'),
  setting('metricsOpen', 'bool', false, 'false', 'Serve `/metrics` without credentials even while auth is on.'),
  setting('metricsTenantLabels', 'string', 'auto', '`auto`', 'Label per-namespace series with `model` and `tenant`: `true`, `false`, or `auto` (= off while auth is on).'),
  setting('grpcAuthFailuresPerSecond', 'int', 5, '5', 'Failed gRPC bearer-token authentications allowed per second per peer host; beyond them (after a burst of `grpcAuthFailureBurst`) its calls get KVS_RESOURCE_EXHAUSTED unchecked. 0 = unthrottled.'),
  setting('grpcAuthFailureBurst', 'int', 20, '20', 'Failed gRPC authentications a peer host may make at once before the throttle applies.'),
  setting('eventsPub', 'string', '', 'off', 'Bind a ZeroMQ PUB here and publish tier events as vLLM KV events (e.g. `tcp://127.0.0.1:5557`).'),
  setting('eventsReplay', 'string', '', 'off', 'Bind a ZeroMQ ROUTER here answering vLLM-style replay requests for tier events.'),
  setting('eventsTopic', 'string', 'kvstash/', '`kvstash/`', 'Topic prefix of tier events; the namespace id is appended.'),
  setting('eventsEncoding', 'string', 'map-events', '`map-events`', 'vLLM KV-event payload encoding: `map-events` (vLLM ≥ v0.26), `array-events` (≤ v0.23) or `map-envelope`.'),
  setting('eventsBufferSteps', 'int', 10000, '10000', 'Tier-event batches kept for replay (and queued for the PUB at most).'),
  setting('authTokens', 'json', null, 'none', 'Bearer tokens → tenants, e.g. `{"<token>": ["acme"], "<ops token>": "*"}`. Switches auth on (gRPC and data socket). Tokens ≥ 16 chars.'),
  setting('curveSecretKey', 'string', '', 'none (no CURVE)', 'z85 CURVE secret key of the sidecar, or `@file` holding it: the data socket (and tier-event sockets) become CURVE servers.'),
  setting('curveClients', 'json', null, 'none', 'CURVE client public keys (z85) → tenants, e.g. `{"<key>": ["acme"]}`. Unlisted keys are refused at the handshake. Switches auth on.'),
];

/** "@path" → the file's first line; anything else as is. */
export function secretValue(v: string): string {
  if (!v.startsWith('@')) return v;
  try {
    return readFileSync(v.slice(1), 'utf8').split('\n')[0]!.trim();
  } catch (err) {
    throw new KvstashError(ErrorCode.CONFIG, `cannot read ${v.slice(1)}: ${(err as Error).message}`, { cause: err });
  }
}

function jsonMap(v: unknown, what: string): Record<string, unknown> | null {
  if (v === null || v === undefined || v === '') return null;
  if (typeof v !== 'object' || Array.isArray(v)) throw new KvstashError(ErrorCode.CONFIG, `${what} must be a JSON object`);
  return v as Record<string, unknown>;
}

export function policyFromConfig(config: Config): AccessPolicy {
  return new AccessPolicy(jsonMap(config.authTokens, 'authTokens'), jsonMap(config.curveClients, 'curveClients'));
}

/** A z85 key is 40 characters of this alphabet, which includes "@" (auth.ts checks client keys the same way). */
const Z85_KEY = /^[0-9a-zA-Z.\-:+=^!/*?&<>()[\]{}@%$#]{40}$/;

/**
 * A key setting: "@path" reads the file, except that a 40-char z85 key may itself start with "@" (1 key in 85):
 * such a value is the key unless a file of that name exists (the Python side, kvstash/auth.py, decides alike).
 */
export function keyValue(v: string): string {
  return v.startsWith('@') && Z85_KEY.test(v) && !existsSync(v.slice(1)) ? v : secretValue(v);
}

export function curveSecretFromConfig(config: Config): string | undefined {
  const v = keyValue(String(config.curveSecretKey ?? ''));
  if (!v) return undefined;
  if (v.length !== 40) throw new KvstashError(ErrorCode.CONFIG, 'curveSecretKey must be a 40-char z85 key (generate one with `kvstash keygen`)');
  return v;
}

export function pinBudgetFromConfig(config: Config, parseBytes: (v: unknown, what: string) => number): number {
  const v = String(config.pinBudgetBytes ?? '');
  return v === '' ? Math.floor(config.dramBytes / 2) : parseBytes(v, 'pinBudgetBytes');
}

/** Who may scrape /metrics (issue 9 item 8): metricsToken; else, with auth on, an operator token; else anyone. */
export function metricsAuthFromConfig(config: Config, policy: AccessPolicy): ((authorization: string | undefined) => boolean) | undefined {
  const token = secretValue(String(config.metricsToken ?? ''));
  if (!token && (!policy.enabled || config.metricsOpen === true)) return undefined;
  return (authorization) => {
    const m = typeof authorization === 'string' ? /^Bearer\s+(\S+)$/i.exec(authorization) : null;
    if (!m) return false;
    if (token) return safeEqual(m[1]!, token);
    return policy.byToken(m[1]!)?.tenants === '*';
  };
}

export function metricsTenantLabelsFromConfig(config: Config, policy: AccessPolicy): boolean {
  const v = String(config.metricsTenantLabels ?? 'auto');
  if (v === 'auto') return !policy.enabled;
  if (v === 'true' || v === 'false') return v === 'true';
  throw new KvstashError(ErrorCode.CONFIG, `metricsTenantLabels: expected auto, true or false, got ${JSON.stringify(v)}`);
}

function safeEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}
