"""Same-host arena: the sidecar's DRAM tier mapped into this process (protocol/README.md "Same-host arena").

Byte layout (mirrors connector/storage/arena-layout.ts): one file per tenant; every slot is a 4 KiB header page
followed by its data, and a descriptor ``[offset, generation]`` names the data. Slot header: ``u32 magic``,
``u32 state`` (0 free, 1 writing, 2 live), ``u64 generation``, ``u64 length``, 8 reserved bytes, the 32-byte block
key, the 16-byte namespace id.

Rules this module keeps:

- **Copy, then check.** A slot's bytes are valid only if, after they were copied, the header still says LIVE with
  the descriptor's generation, key and namespace (``ArenaMap.valid``). A slot reused after its lease ran out, or a
  slot holding another key, is a miss: the copy is thrown away (the engine recomputes), never used.
- **Leases end soon.** ``LeasedGet.release()`` right after the copy (fire and forget); the sidecar also ends a lease
  after ``lease_ms``.
- **Writers stay inside their slots and their deadline**: a slot from ``alloc`` is written only before
  ``commit_ms`` has passed since the ALLOC reply, then committed (or dropped by committing it as not written).
- The mapping is opened once per arena file and kept; a new arena id for the same path (sidecar restart) maps
  the new file and lets the old mapping go.

Nothing here is needed for correctness of a remote client: a client that cannot open the file (another host,
no permission) or whose ATTACH is refused keeps inline frames.
"""
from __future__ import annotations

import logging
import mmap
import os
import struct
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from . import errors as E
from .errors import KvstashError

PAGE = 4096
LIVE = 2
SLOT_MAGIC = 0x534C4F54
_HDR = struct.Struct("<IIQQ")
log = logging.getLogger("kvstash.arena")

Slot = Optional[Tuple[int, int]]


class ArenaMap:
    """One arena file mapped read-write (MAP_SHARED)."""

    def __init__(self, info: Dict[str, Any]) -> None:
        self.id = str(info["id"])
        self.path = str(info["path"])
        fd = os.open(self.path, os.O_RDWR)
        try:
            size = os.fstat(fd).st_size
            self.mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        if self.mm[:8] != b"KVSARENA":
            self.mm.close()
            raise OSError(f"{self.path} is not a kvstash arena file")
        self.token = bytes(self.mm[16:32])
        self.chunk = struct.unpack_from("<I", self.mm, 40)[0]
        self._registered: Dict[int, int] = {}  # chunk index → registered address
        self.view = memoryview(self.mm)
        self._tensor: Any = None
        self._addr: Optional[int] = None

    def valid(self, off: int, gen: int, key: bytes, ns_raw: bytes) -> bool:
        """True if the slot at ``off`` still holds ``key`` of ``ns`` at generation ``gen`` (call AFTER copying)."""
        h = off - PAGE
        magic, state, g, _n = _HDR.unpack_from(self.mm, h)
        return magic == SLOT_MAGIC and state == LIVE and g == gen and self.mm[h + 32 : h + 64] == key and self.mm[h + 64 : h + 80] == ns_raw

    def tensor(self) -> Any:
        """The whole file as a uint8 torch tensor over the mapping (no copy)."""
        if self._tensor is None:
            import torch

            self._tensor = torch.frombuffer(self.mm, dtype=torch.uint8)
        return self._tensor

    def address(self) -> int:
        """Address of the mapping's first byte (for ctypes.memmove)."""
        if self._addr is None:
            import ctypes

            self._addr = ctypes.addressof(ctypes.c_char.from_buffer(self.mm))
        return self._addr

    def register_cuda(self, off: int, n: int) -> bool:
        """Page-lock the chunks holding [off, off + n) with CUDA (``cudaHostRegister``), once each, so host→device
        copies from them are DMA at full speed. Chunk by chunk, as used: registering the whole sparse file would
        commit all of its memory. False (copies still work, through pageable memory) if CUDA refuses."""
        if not self.chunk:
            return False
        import torch

        base = self.tensor().data_ptr()
        ok = True
        for c in range((off - PAGE) // self.chunk, (off + n - 1 - PAGE) // self.chunk + 1):
            if c in self._registered:
                continue
            start = PAGE + c * self.chunk
            size = min(self.chunk, len(self.mm) - start)
            try:
                rc = torch.cuda.cudart().cudaHostRegister(base + start, size, 0)
                if int(getattr(rc, "value", rc)) != 0:
                    raise RuntimeError(f"cudaHostRegister returned {rc}")
                self._registered[c] = base + start
            except Exception as err:  # pragma: no cover - needs a GPU
                ok = False
                log.warning("kvstash: cudaHostRegister of %s chunk %d failed (%s); copies go through pageable memory", self.path, c, err)
                self.chunk = 0  # do not try again
                break
        return ok

    def close(self) -> None:
        try:
            if self._registered:  # pragma: no cover - needs a GPU
                import torch

                for addr in self._registered.values():
                    torch.cuda.cudart().cudaHostUnregister(addr)
                self._registered.clear()
            self._tensor = None
            self.view.release()
            self.mm.close()
        except (BufferError, ValueError):
            pass  # views still exported: the mapping goes when they do


class LeasedGet:
    """The answer to a GET with ``lease``: per key a slot, inline bytes, or a miss."""

    def __init__(self, client: Any, arena: ArenaMap, ns: str, keys: bytes, header: Dict[str, Any], inline: List[memoryview]) -> None:
        self.client, self.arena, self.ns = client, arena, ns
        self.keys = keys
        self.ns_raw = bytes.fromhex(ns)
        self.sizes: List[int] = [int(s) for s in header["sizes"]]
        self.slots: List[Slot] = [tuple(s) if s is not None else None for s in header.get("slots") or [None] * len(self.sizes)]  # type: ignore[misc]
        self.lease = int(header.get("lease") or 0)
        self.inline: List[Optional[memoryview]] = []
        j = 0
        for i, s in enumerate(self.sizes):
            if s >= 0 and self.slots[i] is None:
                self.inline.append(inline[j])
                j += 1
            else:
                self.inline.append(None)

    def __len__(self) -> int:
        return len(self.sizes)

    def key(self, i: int) -> bytes:
        return self.keys[i * 32 : (i + 1) * 32]

    def view(self, i: int) -> Optional[memoryview]:
        """Bytes of block i: a view into the arena (valid until ``release``; check ``valid(i)`` after copying it)
        or the inline frame; None for a miss."""
        s = self.slots[i]
        if s is not None:
            return self.arena.view[s[0] : s[0] + self.sizes[i]]
        return self.inline[i]

    def valid(self, i: int) -> bool:
        s = self.slots[i]
        if s is None:
            return self.sizes[i] >= 0
        return self.arena.valid(s[0], s[1], self.key(i), self.ns_raw)

    def release(self) -> None:
        if self.lease:
            self.client.send_only({"op": "RELEASE", "leases": [self.lease]})
            self.lease = 0


class Allocation:
    """Slots from ALLOC: write block i into ``view(i)`` (before ``deadline``), then ``commit``."""

    def __init__(self, client: Any, arena: ArenaMap, ns: str, header: Dict[str, Any], sizes: Sequence[int], commit_ms: float) -> None:
        self.client, self.arena, self.ns = client, arena, ns
        self.id = int(header["alloc"])
        self.slots: List[Slot] = [tuple(s) if s is not None else None for s in header["slots"]]  # type: ignore[misc]
        self.present: List[bool] = [bool(p) for p in header["present"]]
        self.sizes = list(sizes)
        self.deadline = time.monotonic() + commit_ms / 1000.0

    def view(self, i: int) -> Optional[memoryview]:
        s = self.slots[i]
        return None if s is None else self.arena.view[s[0] : s[0] + self.sizes[i]]

    def writable(self) -> bool:
        return time.monotonic() < self.deadline

    def commit(self, written: Optional[Sequence[bool]] = None, timeout_ms: Optional[float] = None) -> List[int]:
        """Publish the written slots; returns a PUT result per key (present keys answer PRESENT)."""
        h: Dict[str, Any] = {"op": "COMMIT", "ns": self.ns, "alloc": self.id}
        if written is not None:
            h["written"] = [bool(w) for w in written]
        res = list(self.client.request(h, (), timeout_ms).header["results"])
        return [1 if self.present[i] else r for i, r in enumerate(res)]


class ArenaClientMixin:
    """The arena half of KvstashClient (kvstash.client): HELLO's ``shm``, ATTACH, lease GETs, ALLOC/COMMIT."""

    _ns_arena: Dict[str, ArenaMap]
    _maps: Dict[str, ArenaMap]
    _reattach_at: Dict[str, float]
    _hellos: Dict[str, Dict[str, Any]]
    arena_limits: Dict[str, float]
    _call: Any
    _with_ns: Any
    _hello: Any
    _deadline: Any


    def _attach(self, ns: str, info: Optional[Dict[str, Any]], deadline: float) -> None:
        """Map the namespace's arena and prove it with ATTACH; any failure leaves this namespace on inline frames."""
        self._ns_arena.pop(ns, None)
        if not info:
            return
        try:
            m = self._maps.get(str(info["path"]))
            if m is None or m.id != str(info["id"]):
                if m is not None:
                    m.close()
                m = self._maps[str(info["path"])] = ArenaMap(info)
            r = self._call({"op": "ATTACH", "ns": ns, "token": m.token}, (), deadline)
        except (OSError, ValueError, KvstashError) as err:  # another host, no permission, refused: inline frames
            if isinstance(err, KvstashError) and err.code in (E.TIMEOUT, E.UNAVAILABLE):
                raise
            return
        self.arena_limits = {"lease_ms": float(r.header.get("lease_ms") or 0), "commit_ms": float(r.header.get("commit_ms") or 0)}
        self._ns_arena[ns] = m

    def arena_of(self, ns: str) -> Optional[ArenaMap]:
        """The arena this client attached for ``ns`` (None: blocks come inline)."""
        return self._ns_arena.get(ns)

    def _lost_attach(self, ns: str, deadline: float) -> None:
        """A lease GET answered without slots: the sidecar forgot this client (restart). Re-HELLO, at most 1/s."""
        now = time.monotonic()
        if now - self._reattach_at.get(ns, 0.0) >= 1.0 and ns in self._hellos:
            self._reattach_at[ns] = now
            self._hello(self._hellos[ns], deadline)

    def lease_get(self, ns: str, keys: Any, timeout_ms: Optional[float] = None) -> Optional[LeasedGet]:
        """GET with descriptors into the arena (None when not attached: use ``get``). Copy, check ``valid(i)``, ``release()``."""
        m = self._ns_arena.get(ns)
        if m is None:
            return None
        from .client import keys_field

        kb = keys_field(keys)
        deadline = self._deadline(timeout_ms)
        r = self._with_ns(ns, {"op": "GET", "keys": kb, "lease": True}, (), deadline)
        if "slots" not in r.header:
            self._lost_attach(ns, deadline)
        return LeasedGet(self, m, ns, kb, r.header, r.blocks)

    def alloc(self, ns: str, keys: Any, sizes: Sequence[int], timeout_ms: Optional[float] = None) -> Optional[Allocation]:
        """Slots to write blocks into in place (None when not attached: use ``put``)."""
        m = self._ns_arena.get(ns)
        if m is None:
            return None
        from .client import keys_field

        r = self._with_ns(ns, {"op": "ALLOC", "keys": keys_field(keys), "sizes": [int(x) for x in sizes]}, (), self._deadline(timeout_ms))
        return Allocation(self, m, ns, r.header, sizes, self.arena_limits.get("commit_ms", 0) / 2)


def copy_out(lg: LeasedGet, into: Optional[Sequence[Any]] = None) -> List[Optional[memoryview]]:
    """Copy leased slots out of the arena (then check them), release the lease; inline frames as they are.
    ``into``: one writable buffer per key to copy into (see ``KvstashClient.get_many``)."""
    out: List[Optional[memoryview]] = []
    for i in range(len(lg)):
        v = lg.view(i)
        if v is None:
            out.append(None)
        elif into is not None:
            b = fill(into[i], v)
            out.append(b if b is not None and (lg.slots[i] is None or lg.valid(i)) else None)
        elif lg.slots[i] is None:
            out.append(v)
        else:
            b = memoryview(bytearray(v))
            out.append(b if lg.valid(i) else None)
    lg.release()
    return out


def fill(dst: Any, v: Any) -> Optional[memoryview]:
    """Copy ``v`` into the front of the writable buffer ``dst``: the filled part, or None when it does not fit."""
    d = memoryview(dst).cast("B")
    n = memoryview(v).nbytes
    if d.readonly or d.nbytes < n:
        return None
    d[:n] = memoryview(v).cast("B")
    return d[:n]


def shm_wanted() -> bool:
    """``KVSTASH_SHM=0`` turns the arena off for this process (inline frames only)."""
    return os.environ.get("KVSTASH_SHM", "1").lower() not in ("0", "false", "no", "off")
