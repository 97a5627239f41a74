"""The vLLM worker's same-host arena half (kvstash.arena): loads read in place, CPU saves gathered into slots.

A mixin of ``WorkerSide`` (kvstash.vllm_worker); it uses the worker's clients, layout and counters. Rules:
- loads: one lease GET; CPU parts are views of the arena, checked (slot still the same key and generation) once
  every layer was scattered, then released; GPU parts are copied host→device per run, checked right after the copy;
- saves on CPU: one ALLOC on the forward thread's client at the first ``save_kv_layer``, layers gathered straight
  into the slots, one COMMIT from the same client at ``wait_for_save``;
- a client without the arena (remote sidecar, the GPU benches' stand-in) makes every method here answer None, and
  the worker takes the inline path.
"""
from __future__ import annotations

import time
from typing import Any, List, Optional

from .arena_io import check_prefix, leading_parts
from .client import PUT_PRESENT, PUT_STORED
from .errors import KvstashError


#: deadlines of the ALLOC and COMMIT the forward thread waits for (a stalled sidecar costs a step at most this)
ALLOC_MS, COMMIT_MS = 100.0, 200.0


class ArenaWorkerMixin:
    s: Any
    spec: Any
    desc: Any
    clients: Any
    kv: Any
    layers: List[str]
    cuda: bool
    block_bytes: int
    _side_stream: Any
    _sync: list
    _count: Any
    _warn_once: Any
    _leading_ok: Any
    _idx: Any
    _account: Any
    _release: Any

    def _fetch_arena(self, ld: Any) -> Optional[tuple]:
        """Lease GET from the same-host arena; None when this worker's client is not attached (remote sidecar)."""
        left = (ld.deadline - time.monotonic()) * 1000.0
        if left <= 0:
            raise KvstashError("KVS_TIMEOUT", "load deadline passed before the request was sent")
        c = self.clients.get()
        if not hasattr(c, "lease_get"):  # a client without the arena (the GPU benches' in-memory stand-in)
            return None
        ns = c.namespace(self.desc, timeout_ms=left)
        lg = c.lease_get(ns, ld.spec.keys, timeout_ms=max(0.0, (ld.deadline - time.monotonic()) * 1000.0))
        if lg is None:
            return None
        ok = self._leading_ok(lg.sizes)
        if not ok:
            lg.release()
            return 0, None, None, None
        dt = next(iter(self.kv.values())).dtype
        shape = (len(self.layers), *self.spec.layer_shape())
        if not self.cuda:
            return ok, leading_parts(lg, ok, self.block_bytes, dt, shape), self._idx(ld.spec.block_ids[:ok]), lg
        import torch

        dev = next(iter(self.kv.values())).device
        if self._side_stream is None:
            self._side_stream = torch.cuda.Stream(device=dev)
        with torch.cuda.stream(self._side_stream):
            parts = leading_parts(lg, ok, self.block_bytes, dt, shape, device=dev)
        self._side_stream.synchronize()  # the copies are done: now the slots may be checked and let go
        ok = check_prefix(lg, ok)
        lg.release()
        return ok, parts, self._idx(ld.spec.block_ids[:ok]), None

    def _settle(self, ld: Any) -> None:
        """After the scatter from an arena lease: keep only the leading blocks still valid, let the slots go."""
        if ld.lease is not None:
            ld.ok = min(ld.ok, check_prefix(ld.lease, ld.ok))
            ld.lease.release()
            ld.lease = None

    def _settle_sync(self) -> None:
        """Sync loads read in place from the arena: checked once every layer was scattered, then counted."""
        for ld in self._sync:
            if ld.lease is not None:
                self._settle(ld)
                self._account(ld)

    def _alloc_in_place(self, saves: list, n: int) -> Any:
        """CPU on the sidecar's host: arena slots for this step's saves (one ALLOC on the forward thread's client,
        committed from it at wait_for_save); None → host staging and the saver thread."""
        try:
            c = self.clients.get()
            if not hasattr(c, "alloc"):
                return None
            if hasattr(c, "connected") and not c.connected():
                return None
            tmo = min(self.s.lookup_timeout_ms, ALLOC_MS)  # on the forward thread: never long
            ns = c.namespace(self.desc, timeout_ms=tmo)
            return c.alloc(ns, [k for s in saves for k in s.keys], [self.block_bytes] * n, timeout_ms=tmo)
        except Exception as err:
            self._warn_once("alloc-" + type(err).__name__, "kvstash: arena ALLOC failed (%s); saving through the socket", err)
            return None

    def _commit_in_place(self, st: Any, complete: bool) -> None:
        """Publish the slots gathered into (none if the step's layers were not all gathered); count like a PUT."""
        al, n = st.alloc, st.idx.numel()
        try:
            keep = [sv.req_id not in st.dropped for sv in st.saves for _b in sv.block_ids]
            written = [complete and keep[i] and al.slots[i] is not None and al.writable() for i in range(n)]
            res = al.commit(written, timeout_ms=min(self.s.save_timeout_ms, COMMIT_MS))
            if complete:
                self._count("saved_blocks", sum(1 for r in res if r == PUT_STORED))
                self._count("present_blocks", sum(1 for r in res if r == PUT_PRESENT))
                self._count("dropped_blocks", sum(1 for r in res if r not in (PUT_STORED, PUT_PRESENT)))
        except Exception as err:  # the slots are reclaimed by the sidecar
            self._count("save_errors", 1)
            self._count("dropped_blocks", n)
            self._warn_once("commit-" + type(err).__name__, "kvstash: arena COMMIT failed (%s); dropped (it is a cache)", err)
        finally:
            self._release(n * self.block_bytes)

    def _arena_client(self) -> Any:
        """(client, ns) when this thread's client is attached to the sidecar's arena, else None."""
        try:
            c = self.clients.get()
            ns = c.namespace(self.desc, timeout_ms=self.s.save_timeout_ms)
            return (c, ns) if c.arena_of(ns) is not None else None
        except Exception:
            return None
