"""Block identity: namespace ids and the kvstash canonical chained block hash v1.

The byte-for-byte definition lives in connector/keys.ts (header comment); this module implements exactly the
same functions, and both are tested against protocol/vectors/block-hash.json (generated from the TypeScript
implementation by scripts/gen-hash-vectors.ts).

Namespace id = first 16 bytes, as 32 lowercase hex chars, of SHA-256 over
  ``"kvstash-ns-v1\\n"`` + for each field in this order ``"<name>=<value>\\n"``
  (model, engine, layout, tp_rank, tp_size, pp_rank, pp_size, tenant; integers in decimal).

Block hash ``h_i = SHA-256("kvstash-block-v1" ‖ h_{i-1} ‖ u32le(T) ‖ T × u32le(token) ‖ u32le(E) ‖ E × extra)``
  with ``h_{-1}`` = 32 zero bytes, T = block size (only full blocks are hashed), and each extra =
  ``u8 tag ‖ u32le(len) ‖ bytes`` in this order: LoRA name (tag 1, every block), cache salt (tag 2, first block
  only), one entry per multimodal item overlapping the block (tag 3, UTF-8 ``"<identifier>:<item offset minus
  block start>"``, decimal, may be negative).

Stable API (used by the vLLM and SGLang adapters): ``NS_FIELDS``, ``ZERO_HASH``, ``namespace_id``,
``block_hash``, ``block_hashes``, ``pack_keys``, ``MultimodalItem``.
Token ids must be integers in [0, 2^32); anything else raises ValueError.
"""
from __future__ import annotations

import hashlib
import struct
import sys
from array import array
from dataclasses import dataclass
from typing import Iterable, List, Mapping, Optional, Sequence, Union

NS_FIELDS = ("model", "engine", "layout", "tp_rank", "tp_size", "pp_rank", "pp_size", "tenant")
ZERO_HASH = bytes(32)
_DOMAIN = b"kvstash-block-v1"
_U32 = struct.Struct("<I")


def namespace_id(desc: Union[Mapping[str, object], object]) -> str:
    """Namespace id of a descriptor (a mapping, or an object with the NS_FIELDS as attributes)."""
    s = "kvstash-ns-v1\n"
    for f in NS_FIELDS:
        v = desc[f] if isinstance(desc, Mapping) else getattr(desc, f)
        if isinstance(v, bool) or not isinstance(v, (str, int)):
            raise ValueError(f"namespace field {f} must be a string or an integer, got {v!r}")
        s += f"{f}={v}\n"
    return hashlib.sha256(s.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True)
class MultimodalItem:
    identifier: str
    offset: int  #: index of the item's first token in the request
    length: int  #: number of tokens the item occupies


def _extra(tag: int, value: bytes) -> bytes:
    return bytes((tag,)) + _U32.pack(len(value)) + value


def _token_bytes(tokens: Sequence[int]) -> bytes:
    try:
        a = array("I", tokens)
    except (OverflowError, TypeError) as err:
        raise ValueError(f"token ids must be integers in [0, 2^32): {err}") from None
    if a.itemsize != 4:  # pragma: no cover - exotic platforms
        a = array("L", tokens)
        if a.itemsize != 4:
            return b"".join(_U32.pack(t) for t in tokens)
    if sys.byteorder != "little":  # pragma: no cover
        a.byteswap()
    return a.tobytes()


def block_hash(parent: bytes, tokens: Sequence[int], extras: Sequence[bytes] = ()) -> bytes:
    """Hash of one block given its parent hash (32 bytes) and its already-encoded extras."""
    if len(parent) != 32:
        raise ValueError(f"parent hash must be 32 bytes, got {len(parent)}")
    h = hashlib.sha256(_DOMAIN)
    h.update(parent)
    h.update(_U32.pack(len(tokens)))
    h.update(_token_bytes(tokens))
    h.update(_U32.pack(len(extras)))
    for e in extras:
        h.update(e)
    return h.digest()


def block_hashes(
    tokens: Sequence[int],
    block_size: int,
    lora: Optional[str] = None,
    cache_salt: Optional[str] = None,
    mm: Iterable[MultimodalItem] = (),
    max_blocks: Optional[int] = None,
) -> List[bytes]:
    """Chained hashes of every full block of ``tokens`` (at most ``max_blocks``); one 32-byte value per block."""
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size <= 0:
        raise ValueError(f"block_size must be a positive integer, got {block_size!r}")
    items = list(mm)
    lora_extra = _extra(1, lora.encode("utf-8")) if lora else None
    full = len(tokens) // block_size
    if max_blocks is not None:
        full = min(full, max(0, max_blocks))
    out: List[bytes] = []
    parent = ZERO_HASH
    for b in range(full):
        start = b * block_size
        ex: List[bytes] = []
        if lora_extra is not None:
            ex.append(lora_extra)
        if b == 0 and cache_salt:
            ex.append(_extra(2, cache_salt.encode("utf-8")))
        for m in items:
            if m.offset < start + block_size and m.offset + m.length > start:
                ex.append(_extra(3, f"{m.identifier}:{m.offset - start}".encode("utf-8")))
        parent = block_hash(parent, tokens[start : start + block_size], ex)
        out.append(parent)
    return out


def pack_keys(hashes: Iterable[bytes]) -> bytes:
    """Concatenate 32-byte hashes into the wire ``keys`` field."""
    return b"".join(hashes)
