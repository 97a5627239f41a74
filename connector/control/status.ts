/**
 * kvstash error code ↔ gRPC status, at the edge of the control plane. `grpcStatusOf` is the ONE place where a
 * kvstash code is mapped to a gRPC status; everything else (server errors, the client-side inverse for statuses
 * raised by gRPC itself) is derived from it.
 * On the wire: status code from grpcStatusOf, details "<KVS_CODE>: <message>", trailing metadata `kvstash-code`.
 */
import * as grpc from '@grpc/grpc-js';
import { ErrorCode, isErrorCode, KvstashError, toKvstashError } from '../../protocol/errors.js';

export const CODE_KEY = 'kvstash-code';

export function grpcStatusOf(code: string): grpc.status {
  switch (code) {
    case ErrorCode.BAD_HEADER:
    case ErrorCode.BAD_FIELD:
    case ErrorCode.KEY_LENGTH:
    case ErrorCode.FRAME_MISMATCH:
    case ErrorCode.INVALID_ARGUMENT:
      return grpc.status.INVALID_ARGUMENT;
    case ErrorCode.VERSION:
    case ErrorCode.CONFIG:
      return grpc.status.FAILED_PRECONDITION;
    case ErrorCode.UNKNOWN_OP:
      return grpc.status.UNIMPLEMENTED;
    case ErrorCode.TOO_LARGE:
    case ErrorCode.RESOURCE_EXHAUSTED:
      return grpc.status.RESOURCE_EXHAUSTED;
    case ErrorCode.NS_UNKNOWN:
    case ErrorCode.NOT_FOUND:
      return grpc.status.NOT_FOUND;
    case ErrorCode.TIMEOUT:
      return grpc.status.DEADLINE_EXCEEDED;
    case ErrorCode.BUSY:
    case ErrorCode.UNAVAILABLE:
    case ErrorCode.STORAGE:
    case ErrorCode.ARENA:
      return grpc.status.UNAVAILABLE;
    case ErrorCode.UNAUTHENTICATED:
      return grpc.status.UNAUTHENTICATED;
    case ErrorCode.PERMISSION_DENIED:
      return grpc.status.PERMISSION_DENIED;
    case ErrorCode.CHECKSUM:
      return grpc.status.DATA_LOSS;
    case ErrorCode.INTERNAL:
      return grpc.status.INTERNAL;
    default:
      return grpc.status.UNKNOWN;
  }
}

/** Server side: anything thrown → a gRPC error carrying the kvstash code. */
export function toServiceError(err: unknown): Partial<grpc.StatusObject> & Error {
  const e = toKvstashError(err);
  const metadata = new grpc.Metadata();
  metadata.set(CODE_KEY, e.code);
  return Object.assign(new Error(e.message), { code: grpcStatusOf(e.code), details: `${e.code}: ${e.message}`, metadata });
}

// For statuses raised by gRPC itself (deadline, connection refused), the kvstash code whose mapping gives them.
const PREFERRED = [ErrorCode.TIMEOUT, ErrorCode.UNAVAILABLE, ErrorCode.UNAUTHENTICATED, ErrorCode.PERMISSION_DENIED,
  ErrorCode.RESOURCE_EXHAUSTED, ErrorCode.INVALID_ARGUMENT, ErrorCode.NOT_FOUND, ErrorCode.UNKNOWN_OP, ErrorCode.INTERNAL];

/** Client side: a gRPC error → KvstashError with the server's code (or the code whose status it is). */
export function fromServiceError(err: unknown): KvstashError {
  const se = err as Partial<grpc.ServiceError>;
  if (typeof se?.code !== 'number') return toKvstashError(err);
  const sent = se.metadata?.get(CODE_KEY)[0];
  const details = String(se.details ?? se.message ?? '');
  if (isErrorCode(sent)) return new KvstashError(sent, details.startsWith(`${sent}: `) ? details.slice(sent.length + 2) : details, { cause: err });
  if (se.code === grpc.status.CANCELLED) return new KvstashError(ErrorCode.UNAVAILABLE, `call cancelled: ${details}`, { cause: err });
  const code = PREFERRED.find((c) => grpcStatusOf(c) === se.code) ?? ErrorCode.INTERNAL;
  return new KvstashError(code, details || grpc.status[se.code] || 'gRPC error', { cause: err });
}
