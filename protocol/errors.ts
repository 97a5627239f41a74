/**
 * kvstash error codes — one module for the whole project.
 *
 * Rules:
 * - Every error that crosses a process boundary (ZeroMQ reply, gRPC status, CLI exit, lm:// log line)
 *   carries one of these stable `code` strings. Match on `code`, never on `message`.
 * - Codes are part of wire protocol v1: a code is never renamed or reused; new codes may be added.
 * - Messages say what was expected and what came. `cause` keeps the underlying error when there is one.
 * - Expected misses on hot paths (a block not found) are results, not errors.
 */

export const ErrorCode = {
  /** Header frame is not valid msgpack, or not a map. */
  BAD_HEADER: 'KVS_BAD_HEADER',
  /** A header field is missing or has the wrong type / range. */
  BAD_FIELD: 'KVS_BAD_FIELD',
  /** Protocol version in the header is not one this sidecar speaks. */
  VERSION: 'KVS_VERSION',
  /** `op` is not a known operation. */
  UNKNOWN_OP: 'KVS_UNKNOWN_OP',
  /** Number or sizes of binary frames disagree with the header. */
  FRAME_MISMATCH: 'KVS_FRAME_MISMATCH',
  /** Message (or one block) is over the configured size limit. */
  TOO_LARGE: 'KVS_TOO_LARGE',
  /** `keys` is not a whole number of 32-byte block hashes, or is empty where keys are required. */
  KEY_LENGTH: 'KVS_KEY_LENGTH',
  /** Namespace id is not registered (send HELLO first) or malformed. */
  NS_UNKNOWN: 'KVS_NS_UNKNOWN',
  /** Client has too many bytes in flight; retry later (saves may simply be dropped). */
  BUSY: 'KVS_BUSY',
  /** Request deadline passed before the sidecar could answer. */
  TIMEOUT: 'KVS_TIMEOUT',
  /** Sidecar is closing or not reachable. */
  UNAVAILABLE: 'KVS_UNAVAILABLE',
  /** Authentication missing or wrong. */
  UNAUTHENTICATED: 'KVS_UNAUTHENTICATED',
  /** Authenticated, but not allowed to touch that tenant / namespace. */
  PERMISSION_DENIED: 'KVS_PERMISSION_DENIED',
  /** Configuration is invalid (unknown driver, bad value). */
  CONFIG: 'KVS_CONFIG',
  /** Stored bytes failed their checksum; the block is treated as a miss and quarantined. */
  CHECKSUM: 'KVS_CHECKSUM',
  /** A storage driver failed (I/O error, server error). */
  STORAGE: 'KVS_STORAGE',
  /** Requested thing does not exist where existence is required (control plane). */
  NOT_FOUND: 'KVS_NOT_FOUND',
  /** A bounded resource (pin budget, queue) is exhausted. */
  RESOURCE_EXHAUSTED: 'KVS_RESOURCE_EXHAUSTED',
  /** Argument rejected by the control plane. */
  INVALID_ARGUMENT: 'KVS_INVALID_ARGUMENT',
  /** Same-host arena op refused: no arena configured, the client has not attached, a wrong token, or an unknown allocation. */
  ARENA: 'KVS_ARENA',
  /** A bug or an unexpected failure inside kvstash. */
  INTERNAL: 'KVS_INTERNAL',
} as const;

export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

const ALL_CODES = new Set<string>(Object.values(ErrorCode));

export function isErrorCode(s: unknown): s is ErrorCode {
  return typeof s === 'string' && ALL_CODES.has(s);
}

export class KvstashError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'KvstashError';
    this.code = code;
  }
}

/** Wrap anything thrown into a KvstashError, keeping a coded one as it is. */
export function toKvstashError(err: unknown, fallback: ErrorCode = ErrorCode.INTERNAL): KvstashError {
  if (err instanceof KvstashError) return err;
  const e = err as { code?: unknown; message?: unknown };
  if (isErrorCode(e?.code)) return new KvstashError(e.code, String(e.message ?? e.code), { cause: err });
  return new KvstashError(fallback, err instanceof Error ? err.message : String(err), { cause: err });
}
