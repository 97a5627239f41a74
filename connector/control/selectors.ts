/**
 * Resolve control-plane request parts (Namespace, Prefix, Selector messages of kvstash.proto) into storage keys,
 * checking tenancy on the way. Every refusal is a KvstashError: INVALID_ARGUMENT / KEY_LENGTH for malformed
 * input, NS_UNKNOWN for an unregistered namespace id, PERMISSION_DENIED for another tenant's namespace.
 */
import { ErrorCode, KvstashError } from '../../protocol/errors.js';
import type { NamespaceDescriptor } from '../../protocol/wire.js';
import { blockHashes, namespaceId } from '../keys.js';
import type { PluginHost } from '../server/sidecar.js';
import type { AccessPolicy, Principal } from './auth.js';

export interface DescriptorMsg { model: string; engine: string; layout: string; tp_rank: number; tp_size: number; pp_rank: number; pp_size: number; tenant: string }
export interface NamespaceMsg { id?: string; descriptor?: DescriptorMsg | null; kind?: string }
export interface TokensMsg { ids: number[]; block_size: number; lora: string; cache_salt: string; mm: { identifier: string; offset: number; length: number }[] }
export interface PrefixMsg { tokens?: TokensMsg | null; hashes?: { hashes: Buffer[] } | null; kind?: string }
export interface SelectorMsg { namespace: NamespaceMsg | null; prefix: PrefixMsg | null; tenant: string }

export const MAX_TOKENS = 1 << 22;
const NS_RE = /^[0-9a-f]{32}$/;
const bad = (msg: string): never => { throw new KvstashError(ErrorCode.INVALID_ARGUMENT, msg); };

/** A resolved selection: how it was scoped, and its storage keys (computed on demand: tenant scans the index). */
export interface Selection {
  scope: 'prefix' | 'namespace' | 'tenant';
  namespace?: string;
  tenant: string;
  keys(): string[];
}

export class Resolver {
  constructor(private readonly sidecar: PluginHost, private readonly policy: AccessPolicy, private readonly maxKeys: number) {}

  /** Tenant of a storage key's namespace; undefined when the namespace is not registered. */
  tenantOfKey(key: string): string | undefined {
    return this.sidecar.namespaces.get(key.slice(0, 32))?.tenant;
  }

  namespace(ns: NamespaceMsg | null | undefined, p: Principal): { id: string; desc: NamespaceDescriptor } {
    if (!ns || !ns.kind) return bad('a namespace (id or descriptor) is required');
    let id: string;
    let desc: NamespaceDescriptor | undefined;
    if (ns.kind === 'id') {
      id = String(ns.id);
      if (!NS_RE.test(id)) bad(`namespace id must be 32 lowercase hex chars, got ${JSON.stringify(id)}`);
      desc = this.sidecar.namespaces.get(id);
      if (!desc) throw new KvstashError(ErrorCode.NS_UNKNOWN, `namespace ${id} is not known to this sidecar`);
    } else {
      const d = ns.descriptor!;
      for (const f of ['model', 'engine', 'layout', 'tenant'] as const) if (!d[f]) bad(`namespace descriptor field "${f}" is empty`);
      if (d.tp_size < 1 || d.pp_size < 1 || d.tp_rank >= d.tp_size || d.pp_rank >= d.pp_size) bad('namespace descriptor ranks must be below sizes ≥ 1');
      desc = { model: d.model, engine: d.engine, layout: d.layout, tp_rank: d.tp_rank, tp_size: d.tp_size, pp_rank: d.pp_rank, pp_size: d.pp_size, tenant: d.tenant };
      id = namespaceId(desc);
    }
    this.policy.check(p, desc.tenant);
    return { id, desc };
  }

  /** 32-byte block hashes of a prefix. */
  hashes(prefix: PrefixMsg | null | undefined): Buffer[] {
    if (!prefix || !prefix.kind) return bad('a prefix (tokens or hashes) is required');
    let out: Buffer[];
    if (prefix.kind === 'tokens') {
      const t = prefix.tokens!;
      if (!(t.block_size > 0)) bad('tokens.block_size must be a positive integer');
      if (t.ids.length > MAX_TOKENS) bad(`${t.ids.length} tokens is over the limit of ${MAX_TOKENS}`);
      out = blockHashes(t.ids, t.block_size, { lora: t.lora || undefined, cacheSalt: t.cache_salt || undefined, mm: t.mm });
    } else {
      out = prefix.hashes!.hashes;
      for (const [i, h] of out.entries()) {
        if (h.length !== 32) throw new KvstashError(ErrorCode.KEY_LENGTH, `hashes[${i}] is ${h.length} bytes; block hashes are 32 bytes`);
      }
    }
    if (out.length > this.maxKeys) throw new KvstashError(ErrorCode.TOO_LARGE, `${out.length} blocks is over the limit of ${this.maxKeys} per call`);
    return out;
  }

  selection(sel: SelectorMsg | null | undefined, p: Principal): Selection {
    if (!sel) return bad('a selector is required');
    const index = this.sidecar.tiers.index;
    if (sel.namespace?.kind) {
      const { id, desc } = this.namespace(sel.namespace, p);
      if (sel.tenant && sel.tenant !== desc.tenant) bad(`selector tenant ${JSON.stringify(sel.tenant)} differs from the namespace's tenant ${JSON.stringify(desc.tenant)}`);
      if (!this.sidecar.namespaces.has(id)) {
        // A mistyped --model must not look like success ("0 blocks changed"): say which namespaces exist.
        const same = [...this.sidecar.namespaces.values()].filter((d) => d.tenant === desc.tenant);
        const known = same.map((d) => `${d.model} (${d.engine}, layout ${d.layout}, tp ${d.tp_rank}/${d.tp_size}, pp ${d.pp_rank}/${d.pp_size})`);
        throw new KvstashError(ErrorCode.NS_UNKNOWN, `no namespace model ${JSON.stringify(desc.model)} (${desc.engine}, layout ${desc.layout}, tp ${desc.tp_rank}/${desc.tp_size}, pp ${desc.pp_rank}/${desc.pp_size}) of tenant ${JSON.stringify(desc.tenant)} is registered; ` +
          (known.length ? `known: ${[...new Set(known)].slice(0, 10).join('; ')}` : 'the tenant has none'));
      }
      if (sel.prefix?.kind) {
        const keys = this.hashes(sel.prefix).map((h) => `${id}/${h.toString('hex')}`);
        return { scope: 'prefix', namespace: id, tenant: desc.tenant, keys: () => keys };
      }
      return { scope: 'namespace', namespace: id, tenant: desc.tenant, keys: () => [...index.keys(new Set([id]))] };
    }
    if (sel.prefix?.kind) bad('a prefix needs a namespace');
    if (!sel.tenant) bad('a selector needs a namespace or a tenant');
    this.policy.check(p, sel.tenant);
    const ids = new Set([...this.sidecar.namespaces].filter(([, d]) => d.tenant === sel.tenant).map(([id]) => id));
    if (ids.size === 0) throw new KvstashError(ErrorCode.NS_UNKNOWN, `tenant ${JSON.stringify(sel.tenant)} has no registered namespace`);
    return { scope: 'tenant', tenant: sel.tenant, keys: () => [...index.keys(ids)] };
  }

  tierIndex(name: string): number {
    const i = this.sidecar.tiers.tiers.findIndex((t) => t.name === name);
    if (i < 0) bad(`unknown tier ${JSON.stringify(name)}; tiers are ${this.sidecar.tiers.tiers.map((t) => t.name).join(', ')}`);
    return i;
  }
}
