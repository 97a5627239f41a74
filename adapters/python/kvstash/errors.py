"""kvstash error codes — the Python mirror of protocol/errors.ts (wire protocol v1).

Rules (same as the TypeScript module):

- Every error that crosses a process boundary carries one of these stable ``code`` strings.
  Match on ``err.code``, never on the message.
- Codes are part of wire protocol v1: never renamed or reused; new ones may be added (in both files).
- Expected misses on hot paths (a block not found) are results, not errors.
"""
from __future__ import annotations

from typing import Optional

BAD_HEADER = "KVS_BAD_HEADER"  #: header frame is not valid msgpack, or not a map
BAD_FIELD = "KVS_BAD_FIELD"  #: a header field is missing or has the wrong type / range
VERSION = "KVS_VERSION"  #: protocol version not spoken by the sidecar
UNKNOWN_OP = "KVS_UNKNOWN_OP"  #: ``op`` is not a known operation
FRAME_MISMATCH = "KVS_FRAME_MISMATCH"  #: number or sizes of binary frames disagree with the header
TOO_LARGE = "KVS_TOO_LARGE"  #: message (or one block) over the configured size limit
KEY_LENGTH = "KVS_KEY_LENGTH"  #: ``keys`` not a whole number of 32-byte hashes
NS_UNKNOWN = "KVS_NS_UNKNOWN"  #: namespace id not registered (send HELLO first) or malformed
BUSY = "KVS_BUSY"  #: too many bytes in flight; retry later (saves may simply be dropped)
TIMEOUT = "KVS_TIMEOUT"  #: the deadline passed before an answer came
UNAVAILABLE = "KVS_UNAVAILABLE"  #: sidecar closing or not reachable; client closed
UNAUTHENTICATED = "KVS_UNAUTHENTICATED"  #: authentication missing or wrong
PERMISSION_DENIED = "KVS_PERMISSION_DENIED"  #: not allowed to touch that tenant / namespace
CONFIG = "KVS_CONFIG"  #: configuration is invalid
CHECKSUM = "KVS_CHECKSUM"  #: stored bytes failed their checksum
STORAGE = "KVS_STORAGE"  #: a storage driver failed
NOT_FOUND = "KVS_NOT_FOUND"  #: requested thing does not exist (control plane)
RESOURCE_EXHAUSTED = "KVS_RESOURCE_EXHAUSTED"  #: a bounded resource is exhausted
INVALID_ARGUMENT = "KVS_INVALID_ARGUMENT"  #: argument rejected
ARENA = "KVS_ARENA"  #: same-host arena op refused (no arena, not attached, wrong token, unknown allocation)
INTERNAL = "KVS_INTERNAL"  #: a bug or an unexpected failure inside kvstash

ALL_CODES = frozenset(
    v for k, v in dict(globals()).items() if k.isupper() and isinstance(v, str) and v.startswith("KVS_")
)


def is_error_code(s: object) -> bool:
    return isinstance(s, str) and s in ALL_CODES


class KvstashError(Exception):
    """An error with a stable ``code`` (one of the constants above) and an optional ``cause``."""

    def __init__(self, code: str, message: str, cause: Optional[BaseException] = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code if is_error_code(code) else INTERNAL
        self.message = message
        self.cause = cause
        if cause is not None:
            self.__cause__ = cause


def to_kvstash_error(err: BaseException, fallback: str = INTERNAL) -> KvstashError:
    """Wrap anything raised into a KvstashError, keeping a coded one as it is."""
    if isinstance(err, KvstashError):
        return err
    return KvstashError(fallback, str(err) or type(err).__name__, cause=err)
