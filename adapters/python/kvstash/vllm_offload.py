"""kvstash as a secondary tier of vLLM's own ``OffloadingConnector`` (tiering offload), one module, no connector.

vLLM keeps its CPU primary tier in a shared file (``/dev/shm/vllm_offload_<engine_id>.mmap``, block ``b`` is the
row at ``b * row_stride``: ``vllm/v1/kv_offload/cpu/shared_offload_region.py``) and does the GPU<->CPU copies
itself. This tier forwards job descriptors ``(job_id, keys, block_ids)`` to the sidecar, and the sidecar reads
(store) or writes (load) those rows of the file itself (``adapters/vllm-offload/plugin.ts``): no KV bytes cross
the socket. kvstash then tiers the blocks to SSD, NFS and S3 with its budgets and checksums.

Signatures pinned (``vllm/v1/kv_offload/tiering/``; they change between commits, so both spellings are here):
- ``base.py`` @ vllm-project/vllm 041410b: ``SecondaryTierManager(offloading_spec, primary_kv_view, tier_type)``,
  ``lookup(key, req_context) -> bool | None``, ``submit_store(job)``, ``submit_load(job)``, ``get_finished()``,
  optional ``touch``, ``get_request_offloading_context``, ``request_finished``, ``shutdown``;
- ``manager.py`` @ 01bb462 polls ``get_finished_jobs()``; ``factory.py`` @ 0411f95 builds tiers with
  ``tier_cls(vllm_config=…, primary_kv_view=…, tier_type=…, **tier_config)``; ``example/manager.py`` @ 033af9c
  adds ``on_new_request`` and ``drain_jobs``.
``JobMetadata``: job_id, keys (OffloadKey = block hash bytes + 4-byte group index, ``base.py``), block_ids
(numpy int64), is_promotion, req_context. ``JobResult(job_id, success)``.

Rules (all calls run on vLLM's scheduler thread and never wait long):
- ``submit_store`` / ``submit_load`` send one message and return; ``get_finished``/``get_finished_jobs`` collect
  the replies without waiting. A job whose reply has not come within ``job_timeout_ms`` (default 10 s), or that
  could not be sent (sidecar down), is reported failed: vLLM then drops the cascade or frees the promotion.
- ``lookup``: keys this tier stored or saw hit are answered from a local set at once; other keys ask the sidecar
  with a deadline of ``lookup_timeout_ms`` (default 10 ms; a round trip over ipc takes ~0.1 ms). A miss, a timeout
  or a sidecar that is not connected answers False (vLLM recomputes); after a timeout the tier answers False
  without asking for ``retry_s`` (default 2 s).
- Configuration (the tier config's extra keys): ``endpoint`` (default: kvstash's default socket), ``mmap_path``
  (default ``/dev/shm/vllm_offload_<engine_id>.mmap`` with vLLM's ``kv_transfer_config.engine_id``), ``model``,
  ``tenant`` (default "default"), ``token`` (kvstash bearer token), the timeouts above.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Tuple

from .client import KvstashClient, default_endpoint
from .errors import KvstashError

try:  # vLLM's own types when vLLM is installed (the factory requires the subclass)
    from vllm.v1.kv_offload.tiering.base import JobResult, SecondaryTierManager  # type: ignore
except Exception:  # harness / tests without vLLM
    SecondaryTierManager = object  # type: ignore

    @dataclass
    class JobResult:  # type: ignore[no-redef]
        job_id: int
        success: bool

__all__ = ["KvstashSecondaryTier", "JobResult"]

_KNOWN_MAX = 1 << 20


def _attr(obj: Any, *path: str) -> Any:
    for p in path:
        obj = getattr(obj, p, None)
        if obj is None:
            return None
    return obj


class KvstashSecondaryTier(SecondaryTierManager):  # type: ignore[misc, valid-type]
    def __init__(self, offloading_spec: Any = None, primary_kv_view: Any = None, tier_type: str = "kvstash",
                 vllm_config: Any = None, endpoint: Optional[str] = None, mmap_path: Optional[str] = None,
                 model: Optional[str] = None, tenant: str = "default", token: Optional[str] = None,
                 lookup_timeout_ms: float = 10.0, job_timeout_ms: float = 10_000.0, retry_s: float = 2.0,
                 connect_timeout_ms: float = 2000.0,
                 **_ignored: Any) -> None:
        if primary_kv_view is None:
            raise ValueError("kvstash secondary tier needs primary_kv_view (vLLM passes it)")
        self._offloading_spec = offloading_spec
        self._primary_kv_view = primary_kv_view
        self.tier_type = tier_type
        vllm_config = vllm_config or _attr(offloading_spec, "vllm_config")
        view = memoryview(primary_kv_view)
        if view.ndim != 2:
            raise ValueError(f"primary_kv_view must be (num_blocks, row_stride), got shape {view.shape}")
        shape = tuple(view.shape or ())
        self.num_blocks, self.row_stride = int(shape[0]), int(shape[1]) * view.itemsize
        engine_id = _attr(vllm_config, "kv_transfer_config", "engine_id")
        if mmap_path is None:
            if not engine_id:
                raise ValueError("kvstash secondary tier: give mmap_path, or run under vLLM (kv_transfer_config.engine_id)")
            mmap_path = f"/dev/shm/vllm_offload_{engine_id}.mmap"
        self.mmap_path = mmap_path
        model = model or _attr(vllm_config, "model_config", "model") or "unknown"
        self._region = {
            "path": mmap_path, "row_stride": self.row_stride, "num_blocks": self.num_blocks,
            "namespace": {"model": str(model), "engine": "vllm-offload", "layout": f"offload-row;stride={self.row_stride}",
                          "tp_rank": 0, "tp_size": 1, "pp_rank": 0, "pp_size": 1, "tenant": tenant},
        }
        self._lookup_s = lookup_timeout_ms / 1000.0
        self._job_s = job_timeout_ms / 1000.0
        self._retry_s = retry_s
        self._down_until = 0.0
        self._client = KvstashClient(endpoint or default_endpoint(), timeout_ms=job_timeout_ms, client_name="kvstash-vllm-offload", token=token)
        self.last_error: Optional[str] = None
        try:  # connect now (bounded), so the first job does not meet a socket still connecting
            self._client.ping(timeout_ms=connect_timeout_ms)
        except KvstashError as err:
            self.last_error = f"{err.code}: {err}"
            self._down_until = time.monotonic() + retry_s
        self._known: "OrderedDict[bytes, None]" = OrderedDict()
        self._jobs: Dict[int, Tuple[int, bool, List[bytes], float]] = {}  # rid -> (job_id, is_store, keys, t0)
        self._finished: List[JobResult] = []
        self.stats = {"lookups": 0, "lookup_asks": 0, "lookup_timeouts": 0, "stores": 0, "loads": 0, "failed_jobs": 0}

    # ---- lookups ------------------------------------------------------------------------------------------

    def _remember(self, keys: Iterable[bytes]) -> None:
        for k in keys:
            self._known[bytes(k)] = None
            self._known.move_to_end(bytes(k))
        while len(self._known) > _KNOWN_MAX:
            self._known.popitem(last=False)

    def lookup(self, key: bytes, req_context: Any = None) -> Optional[bool]:
        self.stats["lookups"] += 1
        k = bytes(key)
        if k in self._known:
            return True
        now = time.monotonic()
        if now < self._down_until:
            return False
        self.stats["lookup_asks"] += 1
        try:
            r = self._client.request({"op": "OFFLOAD_LOOKUP", **self._region, "keys": [k]}, timeout_ms=self._lookup_s * 1000)
        except KvstashError as err:
            self.last_error = f"{err.code}: {err}"
            if err.code in ("KVS_TIMEOUT", "KVS_UNAVAILABLE"):
                self.stats["lookup_timeouts"] += 1
                self._down_until = time.monotonic() + self._retry_s
            return False
        hit = bool(r.header.get("hits", [False])[0])
        if hit:
            self._remember([k])
        return hit

    # ---- jobs ---------------------------------------------------------------------------------------------

    def _submit(self, op: str, job: Any, is_store: bool) -> None:
        keys = [bytes(k) for k in job.keys]
        blocks = [int(b) for b in job.block_ids]
        if len(keys) != len(blocks):
            raise ValueError(f"{len(keys)} keys but {len(blocks)} block_ids")
        try:
            if time.monotonic() < self._down_until and not is_store:
                raise KvstashError("KVS_UNAVAILABLE", "sidecar marked down")
            rid = self._client.submit({"op": op, **self._region, "keys": keys, "block_ids": blocks},
                                      deadline=time.monotonic() + self._lookup_s)
        except KvstashError as err:
            self.last_error = f"{err.code}: {err}"
            self.stats["failed_jobs"] += 1
            self._finished.append(JobResult(job_id=job.job_id, success=False))
            return
        self._jobs[rid] = (job.job_id, is_store, keys, time.monotonic())

    def submit_store(self, job_metadata: Any) -> None:
        self.stats["stores"] += 1
        self._submit("OFFLOAD_STORE", job_metadata, True)

    def submit_load(self, job_metadata: Any) -> None:
        self.stats["loads"] += 1
        self._submit("OFFLOAD_LOAD", job_metadata, False)

    def get_finished(self) -> Iterable[JobResult]:
        if self._jobs:
            client = self._client
            client._receive(0)  # same package: collect every reply that has arrived, without waiting
            now = time.monotonic()
            for rid in list(self._jobs):
                job_id, is_store, keys, t0 = self._jobs[rid]
                if rid in client._replies:
                    del self._jobs[rid]
                    try:
                        h = client.wait(rid, deadline=now).header
                        ok = bool(h.get("ok", True)) and (not is_store or int(h.get("dropped", 0)) == 0)
                        if not ok:
                            self.last_error = f"job {job_id}: {h}"
                    except KvstashError as err:
                        self.last_error = f"job {job_id}: {err.code}: {err}"
                        ok = False
                    if ok:
                        self._remember(keys)
                    else:
                        self.stats["failed_jobs"] += 1
                    self._finished.append(JobResult(job_id=job_id, success=ok))
                elif now - t0 > self._job_s:
                    self.last_error = f"job {job_id}: no reply within {self._job_s * 1000:.0f} ms"
                    del self._jobs[rid]
                    client._pending.pop(rid, None)
                    self.stats["failed_jobs"] += 1
                    self._down_until = now + self._retry_s
                    self._finished.append(JobResult(job_id=job_id, success=False))
        out, self._finished = self._finished, []
        return out

    get_finished_jobs = get_finished

    # ---- optional hooks (both spellings) -------------------------------------------------------------------

    def touch(self, keys: Any, req_context: Any = None) -> None:
        return None

    def get_request_offloading_context(self, req_context: Any = None) -> Any:
        try:
            from vllm.v1.kv_offload.base import RequestOffloadingContext  # type: ignore
            return RequestOffloadingContext()
        except Exception:
            return None

    on_new_request = get_request_offloading_context

    def request_finished(self, req_context: Any = None) -> None:
        return None

    def drain_jobs(self, timeout_s: float = 30.0) -> None:
        """Wait for the jobs in flight (vLLM's shutdown path); bounded by ``timeout_s``."""
        until = time.monotonic() + timeout_s
        while self._jobs and time.monotonic() < until:
            self._client._receive(0.01)
            self._finished.extend(self.get_finished())

    def shutdown(self) -> None:
        self._client.close()
