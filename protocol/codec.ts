/**
 * Encode and decode wire protocol v1 messages (see wire.ts for the rules, README.md for the spec).
 * Pure functions over frames: no sockets here, so the codec is tested without a network.
 */
import { Packr } from 'msgpackr';
import { ErrorCode, KvstashError } from './errors.js';
import {
  ALL_OPS, KEY_BYTES, PROTOCOL_VERSION, type Limits, type NamespaceDescriptor, type ReplyBase, type Request,
} from './wire.js';

// int64AsType 'auto': a msgpack int64/uint64 in the safe range (other encoders, e.g. Python's, use them for any
// 41-bit ms timestamp) decodes as a number; only one beyond ±2^53 stays a BigInt, and decodeRequest refuses it.
const packr = new Packr({ useRecords: false, mapsAsObjects: true, variableMapSize: true, ...({ int64AsType: 'auto' } as object) }); // 'auto' is in unpack.js, not in msgpackr's .d.ts

export function packHeader(obj: object): Buffer {
  return packr.pack(obj);
}
export function unpackHeader(buf: Buffer): unknown {
  return packr.unpack(buf);
}

/** A decoding failure that still knows the request id (when it could be read), so an error reply can be sent. */
export class ProtocolError extends KvstashError {
  constructor(code: ErrorCode, message: string, readonly requestId: number | undefined) {
    super(code, message);
  }
}

export interface DecodedRequest {
  header: Request;
  blocks: Buffer[];
}

const NS_RE = /^[0-9a-f]{32}$/;
const SUM_RE = /^[0-9a-f]{16}$/;

function isUint(x: unknown): x is number {
  return typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
}

/** A header value for an error message: JSON, but a BigInt (msgpack int64 beyond 2^53) as its digits, long text cut. */
function show(x: unknown): string {
  if (typeof x === 'bigint') return `${x}n`;
  let s: string;
  try {
    s = JSON.stringify(x, (_k, v: unknown) => (typeof v === 'bigint' ? `${v}n` : v)) ?? String(x);
  } catch {
    s = String(x);
  }
  return s.length > 80 ? s.slice(0, 77) + '...' : s;
}

/** The path of the first BigInt (an integer msgpack decoded beyond 2^53) in a header, depth ≤ 3. */
function unsafeIntPath(x: unknown, path: string, depth: number): string | undefined {
  if (typeof x === 'bigint') return path;
  if (depth === 0 || x === null || typeof x !== 'object' || x instanceof Uint8Array) return undefined;
  for (const [k, v] of Object.entries(x)) {
    const p = unsafeIntPath(v, path ? `${path}.${k}` : k, depth - 1);
    if (p !== undefined) return p;
  }
  return undefined;
}

/** Decode [header, ...blocks] (no identity frame). Throws ProtocolError with a stable code. */
export function decodeRequest(frames: Buffer[], limits: Limits, extraOps?: ReadonlySet<string>): DecodedRequest {
  if (frames.length === 0) throw new ProtocolError(ErrorCode.BAD_HEADER, 'empty message: expected a msgpack header frame', undefined);
  let total = 0;
  for (const f of frames) total += f.length;
  let raw: unknown;
  try {
    raw = unpackHeader(frames[0]!);
  } catch (err) {
    throw new ProtocolError(ErrorCode.BAD_HEADER, `header frame is not valid msgpack (${(err as Error).message})`, undefined);
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw) || Buffer.isBuffer(raw)) {
    throw new ProtocolError(ErrorCode.BAD_HEADER, `header must be a msgpack map, got ${Array.isArray(raw) ? 'array' : typeof raw}`, undefined);
  }
  const h = raw as Record<string, unknown>;
  const id = isUint(h.id) ? h.id : undefined;
  const fail = (code: ErrorCode, msg: string): never => { throw new ProtocolError(code, msg, id); };
  if (id === undefined) fail(ErrorCode.BAD_FIELD, `header field "id" must be an unsigned integer below 2^53, got ${show(h.id)}`);
  // Integers ≥ 2^53 decode as BigInt: no field takes one, and plugin ops must never see one (issue 9 item 7).
  const big = unsafeIntPath(h, '', 3);
  if (big !== undefined) fail(ErrorCode.BAD_FIELD, `header field "${big}" is an integer beyond 2^53 (${show(big.split('.').reduce<unknown>((o, k) => (o as Record<string, unknown>)[k], h))}); integers must be below 2^53`);
  if (h.v !== PROTOCOL_VERSION) fail(ErrorCode.VERSION, `protocol version ${show(h.v)} is not supported; this sidecar speaks v${PROTOCOL_VERSION}`);
  if (typeof h.op !== 'string' || !(ALL_OPS.has(h.op) || extraOps?.has(h.op))) {
    fail(ErrorCode.UNKNOWN_OP, `unknown op ${show(h.op)}; expected one of ${[...ALL_OPS, ...(extraOps ?? [])].join(', ')}`);
  }
  if (total > limits.maxMessageBytes) fail(ErrorCode.TOO_LARGE, `message of ${total} bytes is over the limit of ${limits.maxMessageBytes}`);
  const blocks = frames.slice(1);
  const op = h.op as string;
  // Plugin ops validate their own fields (and take no binary frames).
  if (!ALL_OPS.has(op)) {
    if (blocks.length > 0) fail(ErrorCode.FRAME_MISMATCH, `${op} takes no binary frames, got ${blocks.length}`);
    return { header: h as unknown as Request, blocks };
  }
  if (op !== 'PUT' && blocks.length > 0) fail(ErrorCode.FRAME_MISMATCH, `${op} takes no binary frames, got ${blocks.length}`);
  if (op === 'HELLO') {
    validateDescriptor(h.namespace, fail);
    optionalBool(h, 'shm', fail);
  } else if (op === 'RELEASE') {
    if (!Array.isArray(h.leases) || h.leases.length > limits.maxKeysPerRequest || !h.leases.every(isUint)) {
      fail(ErrorCode.BAD_FIELD, `"leases" must be a list of lease ids (at most ${limits.maxKeysPerRequest})`);
    }
  } else if (op === 'ATTACH' || op === 'COMMIT') {
    if (typeof h.ns !== 'string' || !NS_RE.test(h.ns)) fail(ErrorCode.NS_UNKNOWN, `"ns" must be a 32-hex-char namespace id from HELLO, got ${JSON.stringify(h.ns)}`);
    if (op === 'ATTACH' && !(h.token instanceof Uint8Array && h.token.length === 16)) fail(ErrorCode.BAD_FIELD, '"token" must be the 16 bytes at offset 16 of the arena file');
    if (op === 'ATTACH') h.token = Buffer.from(h.token as Uint8Array);
    if (op === 'COMMIT') {
      if (!isUint(h.alloc)) fail(ErrorCode.BAD_FIELD, '"alloc" must be the id an ALLOC reply gave');
      if (h.written !== undefined && !(Array.isArray(h.written) && h.written.length <= limits.maxKeysPerRequest && h.written.every((x) => typeof x === 'boolean'))) {
        fail(ErrorCode.BAD_FIELD, '"written" must list one bool per key of the ALLOC');
      }
    }
  } else if (op !== 'STATS' && op !== 'PING') {
    if (typeof h.ns !== 'string' || !NS_RE.test(h.ns)) fail(ErrorCode.NS_UNKNOWN, `"ns" must be a 32-hex-char namespace id from HELLO, got ${show(h.ns)}`);
    const keys = h.keys;
    if (!(keys instanceof Uint8Array)) fail(ErrorCode.KEY_LENGTH, `"keys" must be binary (n × ${KEY_BYTES} bytes)`);
    const kb = keys as Uint8Array;
    if (kb.length % KEY_BYTES !== 0) fail(ErrorCode.KEY_LENGTH, `"keys" is ${kb.length} bytes, not a multiple of ${KEY_BYTES}`);
    const n = kb.length / KEY_BYTES;
    if (n === 0 && op !== 'LOOKUP' && op !== 'EXISTS') fail(ErrorCode.KEY_LENGTH, `${op} needs at least one key`);
    if (n > limits.maxKeysPerRequest) fail(ErrorCode.TOO_LARGE, `${n} keys is over the limit of ${limits.maxKeysPerRequest} per request`);
    h.keys = Buffer.isBuffer(kb) ? kb : Buffer.from(kb.buffer, kb.byteOffset, kb.byteLength);
    if (op === 'GET') optionalBool(h, 'lease', fail);
    if (op === 'ALLOC') {
      const sizes = h.sizes;
      if (!Array.isArray(sizes) || sizes.length !== n || !sizes.every((x) => isUint(x) && x <= limits.maxBlockBytes)) {
        fail(ErrorCode.BAD_FIELD, `"sizes" must list one byte length per key (${n}), each at most ${limits.maxBlockBytes}`);
      }
    }
    if (op === 'LOOKUP' && (h.lease !== undefined || h.lease_ms !== undefined)) {
      if (typeof h.lease !== 'string' || h.lease.length === 0 || h.lease.length > 128) fail(ErrorCode.BAD_FIELD, `"lease" must be a tag of 1..128 chars`);
      if (!isUint(h.lease_ms) || (h.lease_ms as number) > 600_000) fail(ErrorCode.BAD_FIELD, `"lease_ms" must be an integer in 0..600000`);
    }
    if (op === 'PUT') {
      const sizes = h.sizes;
      if (!Array.isArray(sizes) || sizes.length !== n || !sizes.every(isUint)) {
        fail(ErrorCode.FRAME_MISMATCH, `"sizes" must list one byte length per key (${n})`);
      }
      if (blocks.length !== n) fail(ErrorCode.FRAME_MISMATCH, `PUT of ${n} keys carried ${blocks.length} block frames`);
      for (let i = 0; i < n; i++) {
        const want = (sizes as number[])[i]!;
        if (blocks[i]!.length !== want) fail(ErrorCode.FRAME_MISMATCH, `block ${i}: header says ${want} bytes, frame has ${blocks[i]!.length}`);
        if (want > limits.maxBlockBytes) fail(ErrorCode.TOO_LARGE, `block ${i} of ${want} bytes is over the block limit of ${limits.maxBlockBytes}`);
      }
      if (h.sums !== undefined && h.sums !== null) {
        if (!Array.isArray(h.sums) || h.sums.length !== n || !h.sums.every((s) => typeof s === 'string' && SUM_RE.test(s))) {
          fail(ErrorCode.BAD_FIELD, `"sums" must list one 16-hex-char xxh64 per key`);
        }
      } else {
        delete h.sums;
      }
    }
  }
  return { header: h as unknown as Request, blocks };
}

function optionalBool(h: Record<string, unknown>, f: string, fail: (c: ErrorCode, m: string) => never): void {
  if (h[f] !== undefined && h[f] !== null && typeof h[f] !== 'boolean') fail(ErrorCode.BAD_FIELD, `"${f}" must be a bool`);
}

function validateDescriptor(d: unknown, fail: (c: ErrorCode, m: string) => never): void {
  if (d === null || typeof d !== 'object') fail(ErrorCode.BAD_FIELD, 'HELLO needs a "namespace" map');
  const o = d as Record<string, unknown>;
  for (const f of ['model', 'engine', 'layout', 'tenant'] as const) {
    if (typeof o[f] !== 'string' || (o[f] as string).length === 0 || /[\n\0]/.test(o[f] as string)) {
      fail(ErrorCode.BAD_FIELD, `namespace.${f} must be a non-empty string without newlines`);
    }
  }
  for (const f of ['tp_rank', 'tp_size', 'pp_rank', 'pp_size'] as const) {
    if (!isUint(o[f])) fail(ErrorCode.BAD_FIELD, `namespace.${f} must be an unsigned integer`);
  }
  if ((o.tp_rank as number) >= (o.tp_size as number) || (o.pp_rank as number) >= (o.pp_size as number)) {
    fail(ErrorCode.BAD_FIELD, 'namespace ranks must be below their sizes');
  }
}

/** Encode a reply: [header, ...blocks]. */
export function encodeReply(header: Record<string, unknown> & { id: number }, blocks: Buffer[] = []): Buffer[] {
  const h = { v: PROTOCOL_VERSION, status: 'OK', ...header };
  return [packHeader(h), ...blocks];
}

export function encodeError(id: number | undefined, code: string, message: string): Buffer[] {
  return [packHeader({ v: PROTOCOL_VERSION, id: id ?? 0, status: 'ERR', code, message })];
}

/** Encode a request: [header, ...blocks]. */
export function encodeRequest(header: Record<string, unknown>, blocks: Buffer[] = []): Buffer[] {
  return [packHeader({ v: PROTOCOL_VERSION, ...header }), ...blocks];
}

/** Decode a reply on the client side. */
export function decodeReply(frames: Buffer[]): { header: ReplyBase & Record<string, unknown>; blocks: Buffer[] } {
  if (frames.length === 0) throw new KvstashError(ErrorCode.BAD_HEADER, 'empty reply');
  const raw = unpackHeader(frames[0]!);
  if (raw === null || typeof raw !== 'object' || !isUint((raw as ReplyBase).id)) {
    throw new KvstashError(ErrorCode.BAD_HEADER, 'reply header is not a map with an id');
  }
  return { header: raw as ReplyBase & Record<string, unknown>, blocks: frames.slice(1) };
}

export type { NamespaceDescriptor };
