"""SGLang HiCache zero-copy path (``interface_v1``) through the sidecar's same-host arena (kvstash.arena).

``batch_get_v1``: one lease GET for the whole batch, then every page is copied straight from its arena slot into
the host-pool regions ``get_page_buffer_meta`` names (``ctypes.memmove``: no bytes on the socket, no staging), and
checked after the copy (a slot reused meanwhile makes that page False). ``batch_set_v1``: one ALLOC (it also says
which pages are already stored, so no EXISTS round trip), pages copied from the pool straight into their slots,
one COMMIT. Both return None when this thread's client is not attached (remote sidecar): the caller then takes the
inline path.
"""
from __future__ import annotations

import ctypes
from typing import Any, List, Optional, Sequence

from .client import PUT_PRESENT, PUT_STORED


def _copy_page(dst: Sequence[int], sizes: Sequence[int], src: int) -> None:
    off = 0
    for p, n in zip(dst, sizes):
        ctypes.memmove(p, src + off, n)
        off += n


def arena_get_v1(be: Any, keys: List[bytes], ptrs: List[int], sizes: List[int], per: int) -> Optional[List[bool]]:
    c, ns, left = be._client()
    lg = c.lease_get(ns, keys, timeout_ms=left)
    if lg is None:
        return None
    n = len(keys)
    out, read, wrong, hits = [False] * n, 0, 0, 0
    base = lg.arena.address()
    try:
        for i in range(n):
            if lg.sizes[i] < 0:
                continue
            hits += 1
            want = sum(sizes[i * per:(i + 1) * per])
            if lg.sizes[i] != want:
                wrong += 1
                continue
            s = lg.slots[i]
            if s is None:  # inline frame
                v = lg.inline[i]
                buf = (ctypes.c_char * want).from_buffer_copy(v)  # type: ignore[arg-type]
                _copy_page(ptrs[i * per:(i + 1) * per], sizes[i * per:(i + 1) * per], ctypes.addressof(buf))
                out[i] = True
            else:
                _copy_page(ptrs[i * per:(i + 1) * per], sizes[i * per:(i + 1) * per], base + s[0])
                out[i] = lg.valid(i)  # copy, then check
            if out[i]:
                read += want
    finally:
        lg.release()
    with be._lock:
        be.stats["get_pages"] += n
        be.stats["get_hits"] += hits
        be.stats["get_misses"] += n - hits
        be.stats["bytes_read"] += read
        be.stats["errors"] += wrong
    return out


def arena_set_v1(be: Any, keys: List[bytes], ptrs: List[int], sizes: List[int], per: int) -> Optional[List[bool]]:
    c, ns, left = be._client()
    n = len(keys)
    totals = [sum(sizes[i * per:(i + 1) * per]) for i in range(n)]
    al = c.alloc(ns, keys, totals, timeout_ms=left)
    if al is None:
        return None
    base = al.arena.address()
    written = []
    for i in range(n):
        s = al.slots[i]
        ok = s is not None and al.writable()
        if ok:
            off = base + s[0]  # type: ignore[index]
            for j in range(i * per, (i + 1) * per):
                ctypes.memmove(off, ptrs[j], sizes[j])
                off += sizes[j]
        written.append(ok)
    res = al.commit(written, timeout_ms=left)
    ok_pages = [r in (PUT_STORED, PUT_PRESENT) for r in res]
    with be._lock:
        be.stats["bytes_written"] += sum(t for t, w, o in zip(totals, written, ok_pages) if w and o)
        be.stats["set_pages"] += n
        be.stats["set_skipped"] += sum(1 for p in al.present if p)
        be.stats["set_stored"] += sum(1 for w, o in zip(written, ok_pages) if w and o)
        be.stats["set_failed"] += sum(1 for o in ok_pages if not o)
    return ok_pages
