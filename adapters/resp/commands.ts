/**
 * The Redis commands the RESP front answers, and how. Replies follow Redis 7's wording, so clients' error
 * handling works unchanged (redis-py maps `-ERR unknown command`, `-NOAUTH`, `-WRONGPASS` to its exceptions).
 *
 * | command | behaviour |
 * |---|---|
 * | PING [msg], ECHO, QUIT, RESET | as Redis |
 * | HELLO [2\|3 [AUTH user pass] [SETNAME n]] | switches the reply protocol (RESP3 only changes nulls and maps here) |
 * | AUTH [user] pass | pass = a kvstash bearer token (`authTokens`); user = tenant (`default` → `respTenant`) |
 * | SELECT n | database n (0 ≤ n < `respDatabases`): one namespace per database per tenant |
 * | CLIENT SETINFO/SETNAME/GETNAME/ID/NO-EVICT/NO-TOUCH | accepted (redis-py's and redis-cli's handshakes) |
 * | GET, SET k v [EX\|PX\|EXAT\|PXAT t] [NX\|XX] [KEEPTTL] [GET], MGET, MSET | on the tier stack |
 * | EXISTS, DEL, UNLINK, TYPE, STRLEN | counts / types as Redis |
 * | SCAN c [MATCH p] [COUNT n] [TYPE t], KEYS p, DBSIZE | over the key index (store.ts) |
 * | EXPIRE/PEXPIRE/EXPIREAT/PEXPIREAT/PERSIST, TTL/PTTL | accepted, not kept: TTL says -1 (no expiry), -2 (no key) |
 * | FLUSHDB, FLUSHALL [ASYNC\|SYNC] | control-plane rights only: a principal whose tenants are `*` (or auth off) |
 * | INFO [section], CONFIG GET, COMMAND [COUNT\|DOCS\|INFO\|LIST] | enough for redis-cli and redis-benchmark |
 * | anything else | `-ERR unknown command '<name>', with args beginning with: …` |
 */
import type { AccessPolicy, Principal } from '../../connector/control/auth.js';
import { array, bulk, error, int, map, NULL2, NULL3, OK, PONG, simple, type Piece, type Reply, type ValueRead } from './codec.js';
import type { RespStore } from './store.js';

export interface Session {
  id: number;
  db: number;
  tenant: string;
  principal: Principal | undefined;
  proto: 2 | 3;
  name: string;
  quit: boolean;
  /** Namespace id of (db, tenant), cached; cleared when either changes. */
  nsId?: string;
}

export interface CommandContext {
  store: RespStore;
  policy: AccessPolicy;
  defaultTenant: string;
  databases: number;
  info: (section: string) => string;
  counters: { commands: number; hits: number; misses: number; sets: number; dropped: number; errors: number };
}

type Handler = (c: CommandContext, s: Session, a: Buffer[]) => Reply | Promise<Reply>;
interface Spec { arity: number; fn: Handler; noAuth?: boolean }

const lc = (b: Buffer | undefined) => (b ? b.toString('latin1').toLowerCase() : '');
const nil = (s: Session) => (s.proto === 3 ? NULL3 : NULL2);
const ns = (c: CommandContext, s: Session) => s.nsId ?? (s.nsId = c.store.ns(s.db, s.tenant));
const wrongType = () => error('ERR syntax error');
const notInt = () => error('ERR value is not an integer or out of range');

function toInt(b: Buffer | undefined): number | undefined {
  const t = b?.toString('latin1') ?? '';
  return /^-?\d{1,15}$/.test(t) ? Number(t) : undefined;
}

const escapeRe = (ch: string) => ch.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');

/** Redis glob (`*`, `?`, `[abc]`, `[^a-z]`, `\x`) as a RegExp over latin1 key strings. */
export function globToRegExp(p: string): RegExp {
  let r = '';
  for (let i = 0; i < p.length; i++) {
    const ch = p[i]!;
    if (ch === '*') r += '[\\s\\S]*';
    else if (ch === '?') r += '[\\s\\S]';
    else if (ch === '\\' && i + 1 < p.length) r += escapeRe(p[++i]!);
    else if (ch === '[') {
      const close = p.indexOf(']', i + 2);
      if (close < 0) { r += '\\['; continue; }
      let body = p.slice(i + 1, close);
      const neg = body.startsWith('^');
      if (neg) body = body.slice(1);
      r += '[' + (neg ? '^' : '') + body.replace(/[\]\\]/g, '\\$&') + ']';
      i = close;
    } else r += escapeRe(ch);
  }
  return new RegExp('^' + r + '$');
}

function auth(c: CommandContext, s: Session, user: string | undefined, pass: string): Buffer | undefined {
  const tenant = user === undefined || user === 'default' ? c.defaultTenant : user;
  if (!c.policy.enabled) {
    return error('ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?');
  }
  const p = c.policy.byToken(pass);
  if (!p || !c.policy.allows(p, tenant)) return error('WRONGPASS invalid username-password pair or user is disabled.');
  s.principal = p;
  s.tenant = tenant;
  s.nsId = undefined;
  return undefined;
}

function flushAllowed(c: CommandContext, s: Session): boolean {
  return !c.policy.enabled || s.principal?.tenants === '*';
}

const noPerm = (cmd: string) => error(`NOPERM User has no permissions to run the '${cmd}' command`);

function getReply(c: CommandContext, s: Session, v: Buffer | ValueRead | undefined): Reply {
  if (v) c.counters.hits++;
  else c.counters.misses++;
  return v ? bulk(v, s.proto) : nil(s);
}

export const COMMANDS: Record<string, Spec> = {
  ping: { arity: -1, fn: (_c, s, a) => (a.length > 2 ? error("ERR wrong number of arguments for 'ping' command") : a[1] ? bulk(a[1], s.proto) : PONG) },
  echo: { arity: 2, fn: (_c, s, a) => bulk(a[1], s.proto) },
  quit: { arity: -1, noAuth: true, fn: (_c, s) => { s.quit = true; return OK; } },
  reset: { arity: 1, noAuth: true, fn: (c, s) => { s.db = 0; s.proto = 2; s.name = ''; s.tenant = c.defaultTenant; s.principal = undefined; s.nsId = undefined; return simple('RESET'); } },
  auth: {
    arity: -2, noAuth: true,
    fn: (c, s, a) => (a.length > 3 ? wrongType() : auth(c, s, a.length === 3 ? a[1]!.toString('utf8') : undefined, a[a.length - 1]!.toString('utf8')) ?? OK),
  },
  hello: {
    arity: -1, noAuth: true,
    fn: (c, s, a) => {
      let proto = s.proto;
      if (a[1]) {
        const v = toInt(a[1]);
        if (v !== 2 && v !== 3) return error('NOPROTO unsupported protocol version');
        proto = v;
      }
      for (let i = 2; i < a.length; i++) {
        const opt = lc(a[i]);
        if (opt === 'auth' && i + 2 < a.length) {
          const e = auth(c, s, a[i + 1]!.toString('utf8'), a[i + 2]!.toString('utf8'));
          if (e) return e;
          i += 2;
        } else if (opt === 'setname' && i + 1 < a.length) s.name = a[++i]!.toString('utf8');
        else return wrongType();
      }
      if (c.policy.enabled && !s.principal) return error('NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time');
      s.proto = proto;
      return map([
        ['server', bulk('redis', proto)], ['version', bulk('7.0.0', proto)], ['proto', int(proto)], ['id', int(s.id)],
        ['mode', bulk('standalone', proto)], ['role', bulk('master', proto)], ['modules', array([])],
      ], proto);
    },
  },
  select: {
    arity: 2,
    fn: (c, s, a) => {
      const db = toInt(a[1]);
      if (db === undefined) return notInt();
      if (db < 0 || db >= c.databases) return error('ERR DB index is out of range');
      s.db = db;
      s.nsId = undefined;
      return OK;
    },
  },
  client: {
    arity: -2,
    fn: (_c, s, a) => {
      switch (lc(a[1])) {
        case 'setinfo': case 'no-evict': case 'no-touch': case 'reply': return OK;
        case 'setname': s.name = a[2]?.toString('utf8') ?? ''; return OK;
        case 'getname': return bulk(s.name || undefined, s.proto);
        case 'id': return int(s.id);
        default: return error(`ERR unknown subcommand '${a[1]!.toString('utf8')}'. Try CLIENT HELP.`);
      }
    },
  },
  // A DRAM value is read into the connection's output when the reply is queued (ValueRead), not into a Buffer of its own.
  get: { arity: 2, fn: (c, s, a) => { const v = c.store.getForReply(ns(c, s), a[1]!); return v instanceof Promise ? v.then((x) => getReply(c, s, x)) : getReply(c, s, v); } },
  set: {
    arity: -3,
    fn: (c, s, a) => {
      let nx = false, xx = false, get = false;
      for (let i = 3; i < a.length; i++) {
        const o = lc(a[i]);
        if (o === 'nx') nx = true;
        else if (o === 'xx') xx = true;
        else if (o === 'get') get = true;
        else if (o === 'keepttl') continue;
        else if ((o === 'ex' || o === 'px' || o === 'exat' || o === 'pxat') && i + 1 < a.length) {
          const t = toInt(a[++i]);
          if (t === undefined) return notInt();
          if (t <= 0) return error("ERR invalid expire time in 'set' command");
        } else return wrongType();
      }
      if (nx && xx) return wrongType();
      const id = ns(c, s);
      const finish = (old: Buffer | undefined): Reply => {
        if (nx || xx) {
          const exists = old !== undefined || c.store.has(id, a[1]!);
          if ((nx && exists) || (xx && !exists)) return get ? bulk(old, s.proto) : nil(s);
        }
        c.counters.sets++;
        if (!c.store.set(id, a[1]!, a[2]!)) {
          c.counters.dropped++;
          return error('ERR KVS_RESOURCE_EXHAUSTED value not stored: the tiers cannot take it now (a cache may drop writes)');
        }
        return get ? bulk(old, s.proto) : OK;
      };
      if (!get) return finish(undefined);
      const old = c.store.get(id, a[1]!);
      return old instanceof Promise ? old.then(finish) : finish(old);
    },
  },
  mget: {
    arity: -2,
    fn: async (c, s, a) => {
      const id = ns(c, s);
      const vals = await Promise.all(a.slice(1).map((k) => Promise.resolve(c.store.get(id, k))));
      return array(vals.map((v) => getReply(c, s, v)));
    },
  },
  mset: {
    arity: -3,
    fn: (c, s, a) => {
      if (a.length % 2 === 0) return error("ERR wrong number of arguments for 'mset' command");
      const id = ns(c, s);
      let dropped = 0;
      for (let i = 1; i < a.length; i += 2) {
        c.counters.sets++;
        if (!c.store.set(id, a[i]!, a[i + 1]!)) dropped++;
      }
      c.counters.dropped += dropped;
      return dropped ? error(`ERR KVS_RESOURCE_EXHAUSTED ${dropped} of ${(a.length - 1) / 2} values not stored`) : OK;
    },
  },
  exists: { arity: -2, fn: (c, s, a) => { const id = ns(c, s); return int(a.slice(1).filter((k) => c.store.has(id, k)).length); } },
  del: { arity: -2, fn: (c, s, a) => int(c.store.del(ns(c, s), a.slice(1))) },
  unlink: { arity: -2, fn: (c, s, a) => int(c.store.del(ns(c, s), a.slice(1))) },
  type: { arity: 2, fn: (c, s, a) => simple(c.store.has(ns(c, s), a[1]!) ? 'string' : 'none') },
  strlen: { arity: 2, fn: (c, s, a) => { return int(c.store.sizeOf(ns(c, s), a[1]!)); } },
  keys: { arity: 2, fn: (c, s, a) => { const re = globToRegExp(a[1]!.toString('latin1')); return array(c.store.keys(ns(c, s)).filter((k) => re.test(k)).map((k) => bulk(Buffer.from(k, 'latin1'), s.proto))); } },
  scan: {
    arity: -2,
    fn: (c, s, a) => {
      const cursor = toInt(a[1]);
      if (cursor === undefined || cursor < 0) return error('ERR invalid cursor');
      let re: RegExp | undefined, count = 10, type: string | undefined;
      for (let i = 2; i < a.length; i += 2) {
        const o = lc(a[i]);
        if (i + 1 >= a.length) return wrongType();
        if (o === 'match') re = globToRegExp(a[i + 1]!.toString('latin1'));
        else if (o === 'count') { const n = toInt(a[i + 1]); if (n === undefined || n < 1) return wrongType(); count = n; }
        else if (o === 'type') type = lc(a[i + 1]);
        else return wrongType();
      }
      const all = c.store.keys(ns(c, s));
      const end = Math.min(all.length, cursor + count);
      const page = type && type !== 'string' ? [] : all.slice(cursor, end).filter((k) => !re || re.test(k));
      return array([bulk(String(end >= all.length ? 0 : end), s.proto), array(page.map((k) => bulk(Buffer.from(k, 'latin1'), s.proto)))]);
    },
  },
  dbsize: { arity: 1, fn: (c, s) => int(c.store.keys(ns(c, s)).length) },
  flushdb: { arity: -1, fn: (c, s) => { if (!flushAllowed(c, s)) return noPerm('flushdb'); c.store.flush(ns(c, s)); return OK; } },
  flushall: {
    arity: -1,
    fn: (c, s) => {
      if (!flushAllowed(c, s)) return noPerm('flushall');
      for (const { id, desc } of c.store.namespaces()) if (desc.tenant === s.tenant) c.store.flush(id);
      return OK;
    },
  },
  info: { arity: -1, fn: (c, s, a) => bulk(c.info(lc(a[1]) || 'default'), s.proto) },
  config: {
    arity: -2,
    fn: (_c, s, a) => {
      if (lc(a[1]) !== 'get') return error(`ERR unknown subcommand or wrong number of arguments for '${a[1]!.toString('utf8')}'`);
      const known: [string, string][] = [['save', ''], ['appendonly', 'no'], ['databases', String(_c.databases)]];
      const pats = a.slice(2).map((p) => globToRegExp(p.toString('latin1').toLowerCase()));
      return map(known.filter(([k]) => pats.some((re) => re.test(k))).map(([k, v]) => [k, bulk(v, s.proto)]), s.proto);
    },
  },
  command: {
    arity: -1,
    fn: (_c, s, a) => {
      const sub = lc(a[1]);
      if (sub === 'count') return int(Object.keys(COMMANDS).length);
      if (sub === 'list') return array(Object.keys(COMMANDS).map((k) => bulk(k, s.proto)));
      if (sub === 'docs') return map([], s.proto);
      if (sub === '' || sub === 'info') {
        const names = sub === '' ? Object.keys(COMMANDS) : a.slice(2).map((b) => lc(b));
        return array(names.map((n) => (COMMANDS[n] ? commandEntry(n, s.proto) : nil(s))));
      }
      return error(`ERR unknown subcommand '${a[1]!.toString('utf8')}'. Try COMMAND HELP.`);
    },
  },
};

for (const name of ['expire', 'pexpire', 'expireat', 'pexpireat']) {
  COMMANDS[name] = { arity: -3, fn: (c, s, a) => (toInt(a[2]) === undefined ? notInt() : int(c.store.has(ns(c, s), a[1]!) ? 1 : 0)) };
}
COMMANDS.persist = { arity: 2, fn: () => int(0) };
COMMANDS.ttl = { arity: 2, fn: (c, s, a) => int(c.store.has(ns(c, s), a[1]!) ? -1 : -2) };
COMMANDS.pttl = COMMANDS.ttl;

/** A COMMAND INFO entry: [name, arity, flags, first key, last key, step]. */
function commandEntry(name: string, proto: number): Piece[] {
  return array([bulk(name, proto), int(COMMANDS[name]!.arity), array([]), int(0), int(0), int(0)]);
}

/** Run one command; errors in handlers become `-ERR` replies. */
export function execute(c: CommandContext, s: Session, args: Buffer[]): Reply | Promise<Reply> {
  c.counters.commands++;
  const a0 = args[0]!;
  const name = a0.length === 3 && (a0[0]! | 32) === 103 && (a0[1]! | 32) === 101 && (a0[2]! | 32) === 116 ? 'get'
    : a0.length === 3 && (a0[0]! | 32) === 115 && (a0[1]! | 32) === 101 && (a0[2]! | 32) === 116 ? 'set' : lc(a0);
  const spec = COMMANDS[name];
  if (!spec) {
    c.counters.errors++;
    const rest = args.slice(1, 4).map((b) => `'${b.toString('utf8').slice(0, 64)}'`).join(' ');
    return error(`ERR unknown command '${args[0]!.toString('utf8').slice(0, 64)}', with args beginning with: ${rest}`);
  }
  if ((spec.arity > 0 && args.length !== spec.arity) || (spec.arity < 0 && args.length < -spec.arity)) {
    c.counters.errors++;
    return error(`ERR wrong number of arguments for '${name}' command`);
  }
  if (c.policy.enabled && !s.principal && !spec.noAuth) return error('NOAUTH Authentication required.');
  try {
    const r = spec.fn(c, s, args);
    return r instanceof Promise ? r.catch((err: Error) => failed(c, err)) : r;
  } catch (err) {
    return failed(c, err as Error);
  }
}

function failed(c: CommandContext, err: Error): Buffer {
  c.counters.errors++;
  const code = (err as { code?: string }).code;
  return error(`ERR ${code ? code + ' ' : ''}${err.message}`);
}
