/**
 * The control plane as a `kvstash` CLI extension: its settings, its sidecar plugins (data-socket auth, gRPC
 * control plane, metrics, tier events) and its commands: pin, unpin, evict, clear, move, health, watch, keygen
 * (env-doc, which needs every extension's settings, is a core command in kvstash.ts). The core `stats` and `lookup` commands use `grpcStats` / `grpcLookup` from here.
 * Exit codes: see support.ts (0 ok, 1 operational error, 2 usage, 3 refused / not found, 4 not serving).
 */
import { randomBytes } from 'node:crypto';
import type { Command } from 'commander';
import { curveKeyPair } from 'zeromq';
import { EVENT_ENCODINGS, type EventEncoding } from '../protocol/vllm-events.js';
import { ErrorCode, KvstashError } from '../protocol/errors.js';
import type { CliExtension } from './extension.js';
import { parseBytes, type Config } from '../connector/config.js';
import type { SidecarPlugin } from '../connector/server/sidecar.js';
import { formatTable, humanBytes } from '../connector/table.js';
import {
  addConnectionOptions, addSelectorOptions, controlClient, EXIT, grpcAddress, namespaceFrom, noFullBlockHint, prefixFrom, print, progressLine, runCommand, selectorFrom,
  type CommonOpts, type SelOpts,
} from './support.js';
import { DataAuthPlugin } from '../connector/control/data-auth.js';
import type { Msg } from '../connector/control/grpc-client.js';
import { ControlServerPlugin } from '../connector/control/grpc-server.js';
import { MetricsPlugin } from '../connector/control/metrics.js';
import {
  CONTROL_SETTINGS, curveSecretFromConfig, metricsAuthFromConfig, metricsTenantLabelsFromConfig, pinBudgetFromConfig, policyFromConfig,
} from '../connector/control/settings.js';
import { TierEventsPublisher } from '../connector/control/tier-events-publisher.js';

export async function controlPlugins(config: Config): Promise<SidecarPlugin[]> {
  const policy = policyFromConfig(config);
  const curve = curveSecretFromConfig(config);
  const out: SidecarPlugin[] = [];
  if (policy.enabled || curve) out.push(await DataAuthPlugin.create({ policy, curveSecretKey: curve }));
  let events: TierEventsPublisher | undefined;
  if (config.eventsPub || config.eventsReplay) {
    const encoding = String(config.eventsEncoding) as EventEncoding;
    if (!EVENT_ENCODINGS.includes(encoding)) throw new KvstashError(ErrorCode.CONFIG, `eventsEncoding: expected one of ${EVENT_ENCODINGS.join(', ')}, got ${JSON.stringify(encoding)}`);
    events = new TierEventsPublisher({
      pub: String(config.eventsPub || '') || undefined, replay: String(config.eventsReplay || '') || undefined, topic: String(config.eventsTopic),
      encoding, bufferSteps: Math.max(1, Number(config.eventsBufferSteps)), auth: { policy, curveSecretKey: curve },
    });
    out.push(events);
  }
  let metrics: MetricsPlugin | undefined;
  if (config.metrics) {
    metrics = new MetricsPlugin({
      address: String(config.metrics), topNamespaces: Number(config.metricsTopNamespaces), events,
      tenantLabels: metricsTenantLabelsFromConfig(config, policy), authorize: metricsAuthFromConfig(config, policy),
    });
    out.push(metrics);
  }
  if (config.grpc) {
    const cert = String(config.grpcTlsCert || '');
    const key = String(config.grpcTlsKey || '');
    if (!!cert !== !!key) throw new KvstashError(ErrorCode.CONFIG, 'grpcTlsCert and grpcTlsKey go together');
    out.push(new ControlServerPlugin({
      address: String(config.grpc), policy, streamBuffer: Math.max(1, Number(config.grpcStreamBuffer)),
      tls: cert ? { certFile: cert, keyFile: key, clientCaFile: String(config.grpcTlsClientCa || '') || undefined } : undefined,
      pinBudgetBytes: pinBudgetFromConfig(config, parseBytes),
      authFailuresPerSecond: Number(config.grpcAuthFailuresPerSecond ?? 5), authFailureBurst: Number(config.grpcAuthFailureBurst ?? 20),
      onCall: metrics ? (m, s, c) => metrics.recordGrpc(m, s, c) : undefined,
      onStreamDrop: metrics ? (m) => metrics.grpcStreamDropped.inc({ method: m }) : undefined,
    }));
  }
  return out;
}

// ---- stats / lookup (core commands, gRPC path) ----------------------------------------------------------

export function grpcStats(opts: CommonOpts): Promise<void> {
  return runCommand(opts, async () => {
    const c = controlClient(opts);
    try {
      const st = await c.stats();
      print(opts, st, () => {
        const tiers = st.tiers as Msg[];
        const p = st.pins as Msg;
        return `${st.server}  up ${st.uptime_s}s  blocks ${st.blocks}  namespaces ${st.namespaces}  requests ${st.requests}  errors ${st.errors}\n` +
          `pinned ${p.blocks} blocks, ${humanBytes(p.bytes)} of ${p.budget_bytes ? humanBytes(p.budget_bytes) : 'unbounded'}\n` +
          formatTable(['tier', 'medium', 'bytes', 'budget', 'blocks', 'hits', 'misses', 'evictions', 'queue', 'dropped', 'bad sums'],
            tiers.map((t) => [t.name, t.medium, humanBytes(t.bytes), humanBytes(t.budget_bytes), t.blocks, t.hits, t.misses, t.evictions, t.queue_depth, t.dropped_saves, t.checksum_failures]));
      });
    } finally {
      c.close();
    }
  });
}

export function grpcLookup(opts: CommonOpts & SelOpts): Promise<void> {
  return runCommand(opts, async () => {
    const namespace = namespaceFrom({ ...opts, model: opts.model ?? 'default' });
    const prefix = prefixFrom(opts);
    if (!prefix) throw new KvstashError(ErrorCode.INVALID_ARGUMENT, 'lookup needs --tokens or --hashes');
    const c = controlClient(opts);
    try {
      const r = await c.lookup({ namespace, prefix, prefetch: opts.prefetch === true });
      const bs = prefix.tokens ? Number(opts.blockSize) : 0;
      const tiers = r.tiers as Msg[];
      const out = {
        namespace: r.namespace_id, blocks: r.blocks, hit_blocks: r.hit_blocks, hit_tokens: r.hit_blocks * bs,
        tiers: Object.fromEntries(tiers.map((t) => [t.tier, t.blocks])), load_ms: Object.fromEntries(tiers.map((t) => [t.tier, t.load_ms])),
        media: Object.fromEntries(tiers.map((t) => [t.tier, t.medium])),
      };
      const hint = prefix.tokens ? noFullBlockHint((prefix.tokens as Msg).ids.length, bs) : '';
      print(opts, out, () => `${r.hit_blocks} of ${r.blocks} blocks${bs ? ` (${out.hit_tokens} tokens)` : ''} available${hint}\n` +
        formatTable(['tier', 'medium', 'leading blocks', 'est. load ms'], tiers.map((t) => [t.tier, t.medium, t.blocks, Number(t.load_ms).toFixed(2)])));
    } finally {
      c.close();
    }
  });
}

// ---- control commands ------------------------------------------------------------------------------------

type Opts = CommonOpts & SelOpts;

function command(program: Command, name: string, description: string, selector: string | undefined, body: (o: Opts) => Promise<number | void>): Command {
  let cmd = program.command(name).description(description);
  if (selector) cmd = addSelectorOptions(cmd, selector);
  addConnectionOptions(cmd);
  return cmd.action((o: Opts) => runCommand(o, () => body(o)));
}

async function streamProgress(o: Opts, method: string, req: Msg, label: string): Promise<Msg> {
  const c = controlClient(o);
  const bar = progressLine(label, !o.json && process.stderr.isTTY === true);
  let last: Msg = {};
  try {
    const s = c.stream(method, req);
    for await (const m of s.messages) {
      last = m;
      bar.update(m);
    }
  } finally {
    bar.done();
    c.close();
  }
  if (!last.finished) throw new KvstashError(ErrorCode.UNAVAILABLE, `${method} stream ended before it finished (${last.done ?? 0}/${last.total ?? '?'} blocks)`);
  return last;
}

function addCommands(program: Command): void {
  command(program, 'pin', 'pin blocks (never evicted) under a tag; bounded by the pin budget', 'blocks to pin', async (o) => {
    if (!o.tag) throw new KvstashError(ErrorCode.INVALID_ARGUMENT, 'pin needs --tag <tag> (e.g. session:42)');
    const c = controlClient(o);
    try {
      const r = await c.pin({ selector: selectorFrom(o), tag: String(o.tag) });
      print(o, r, () => `pinned ${r.pinned} blocks under ${JSON.stringify(o.tag)} (+${humanBytes(r.added_bytes)}), ${r.missing} not stored; ` +
        `pins: ${r.pins.blocks} blocks, ${humanBytes(r.pins.bytes)} of ${r.pins.budget_bytes ? humanBytes(r.pins.budget_bytes) : 'unbounded'}`);
    } finally {
      c.close();
    }
  }).option('--tag <tag>', 'owner of the pins (Unpin removes by tag)');

  command(program, 'unpin', 'remove a tag\'s pins (all, or those inside a selection)', 'only unpin inside', async (o) => {
    if (!o.tag) throw new KvstashError(ErrorCode.INVALID_ARGUMENT, 'unpin needs --tag <tag>');
    const c = controlClient(o);
    try {
      const sel = o.ns || o.model || o.tenant ? selectorFrom(o) : undefined;
      const r = await c.unpin({ tag: String(o.tag), selector: sel });
      print(o, r, () => `unpinned ${r.unpinned} blocks; pins: ${r.pins.blocks} blocks, ${humanBytes(r.pins.bytes)}`);
    } finally {
      c.close();
    }
  }).option('--tag <tag>', 'tag whose pins to remove');

  command(program, 'evict', 'drop blocks from one tier (or all) without demoting them; pinned blocks stay', 'blocks to evict', async (o) => {
    const c = controlClient(o);
    try {
      const r = await c.evict({ selector: selectorFrom(o), tier: o.tier ?? '' });
      print(o, r, () => `evicted ${r.evicted}, pinned (kept) ${r.pinned}, not there ${r.missing}`);
    } finally {
      c.close();
    }
  }).option('--tier <name>', 'tier to evict from (default: every tier)');

  command(program, 'clear', 'delete every block of a namespace or a tenant from every tier', 'namespace or tenant to clear', async (o) => {
    const sel = selectorFrom(o);
    if (sel.prefix) throw new KvstashError(ErrorCode.INVALID_ARGUMENT, 'clear takes a namespace or a tenant, not a prefix (use evict)');
    const r = await streamProgress(o, 'Clear', { selector: sel, include_pinned: o.includePinned === true }, 'clear');
    print(o, r, () => `removed ${r.changed} of ${r.total} blocks, kept ${r.skipped} pinned, ${r.failed} already gone`);
  }).option('--include-pinned', 'also delete pinned blocks (their pins go with them)');

  command(program, 'move', 'warm (copy up) or demote (copy down, drop faster copies) blocks to a tier', 'blocks to move', async (o) => {
    if (!o.to) throw new KvstashError(ErrorCode.INVALID_ARGUMENT, 'move needs --to <tier>');
    const r = await streamProgress(o, 'Move', { selector: selectorFrom(o), to_tier: String(o.to) }, `move → ${o.to}`);
    print(o, r, () => `moved ${r.changed} of ${r.total} blocks to ${o.to}, ${r.skipped} already there or pinned, ${r.failed} failed or gone`);
  }).option('--to <tier>', 'target tier (dram, file, …)');

  command(program, 'drop-namespaces', 'forget a namespace or every namespace of a tenant (kept while they hold blocks, unless --include-blocks)', 'namespaces to drop', async (o) => {
    const sel = selectorFrom(o);
    if (sel.prefix) throw new KvstashError(ErrorCode.INVALID_ARGUMENT, 'drop-namespaces takes a namespace or a tenant, not a prefix');
    const c = controlClient(o);
    try {
      const r = await c.dropNamespaces({ selector: sel, include_blocks: o.includeBlocks === true });
      print(o, r, () => `dropped ${r.dropped} namespaces, kept ${r.kept} that hold blocks, removed ${r.blocks_removed} blocks`);
    } finally {
      c.close();
    }
  }).option('--include-blocks', 'delete their blocks first (pinned blocks keep their namespace)');

  command(program, 'health', 'liveness of the sidecar and of each tier (exit 4 when not SERVING)', undefined, async (o) => {
    const c = controlClient(o);
    try {
      const h = await c.health();
      print(o, h, () => `${h.status}  ${h.server}  up ${h.uptime_s}s  data socket ${(h.endpoints as string[]).join(', ')}\n` +
        formatTable(['tier', 'driver', 'ok', 'probe ms', 'error'], (h.tiers as Msg[]).map((t) => [t.name, t.driver, t.ok ? 'yes' : 'NO', Number(t.probe_ms).toFixed(1), t.error])));
      return h.status === 'SERVING' ? EXIT.OK : EXIT.NOT_SERVING;
    } finally {
      c.close();
    }
  });

  command(program, 'watch', 'stream tier events (stored / removed / corrupt) of the caller\'s tenants', undefined, async (o) => {
    const c = controlClient(o);
    let n = 0;
    let interrupted = false;
    const max = o.count ? Number(o.count) : Infinity;
    try {
      const s = c.stream('WatchTierEvents', { kinds: o.kinds ? String(o.kinds).split(',') : [], namespace: o.ns ? { id: String(o.ns) } : undefined, tenant: o.tenant ?? '' });
      const stop = () => { interrupted = true; s.call.cancel(); };
      process.once('SIGINT', stop).once('SIGTERM', stop);
      // say at once what is being watched (events may be rare), and say when it stops
      process.stderr.write(`watching tier events at ${grpcAddress(o)}${o.kinds ? ` (${String(o.kinds)})` : ''}; Ctrl-C stops\n`);
      for await (const e of s.messages) {
        const row = { seq: e.seq, kind: e.kind, namespace: e.namespace_id, hash: Buffer.from(e.hash).toString('hex'), tier: e.tier, medium: e.medium, ts: e.ts, dropped: e.dropped };
        process.stdout.write(o.json ? JSON.stringify(row) + '\n' : `${row.seq}\t${row.kind}\t${row.tier}\t${row.medium}\t${row.namespace}/${row.hash}${row.dropped ? `\t(dropped ${row.dropped})` : ''}\n`);
        if (++n >= max) {
          s.call.cancel();
          break;
        }
      }
    } catch (err) {
      if (n < max && !interrupted) throw err;
    } finally {
      c.close();
      process.stderr.write(`watch stopped after ${n} event${n === 1 ? '' : 's'}\n`);
    }
  }).option('--kinds <list>', 'stored,removed,corrupt (default all)').option('--ns <id>', 'only this namespace').option('--tenant <t>', 'only this tenant')
    .option('--count <n>', 'stop after n events');

  program.command('keygen').description('print a new CURVE key pair (z85) for curveSecretKey / curveClients, or a random bearer token')
    .option('--token', 'print a random bearer token instead')
    .option('--json', 'print JSON')
    .action((o: { token?: boolean; json?: boolean }) => {
      if (o.token) {
        const token = randomBytes(24).toString('base64url');
        process.stdout.write(o.json ? JSON.stringify({ token }) + '\n' : `${token}\n`);
        return;
      }
      const kp = curveKeyPair();
      process.stdout.write(o.json ? JSON.stringify(kp) + '\n' : `public ${kp.publicKey}\nsecret ${kp.secretKey}\n`);
    });

}

export const controlExtension: CliExtension = {
  name: 'control',
  settings: CONTROL_SETTINGS,
  plugins: controlPlugins,
  commands: addCommands,
};
