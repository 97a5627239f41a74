"""Several KV-cache groups (vLLM's hybrid KV-cache manager: sliding-window layers next to full attention).

vLLM (``vllm/v1/kv_cache_interface.py``, ``vllm/v1/core/kv_cache_coordinator.py`` @ 003df29) hands the connector a
``kv_cache_config.kv_cache_groups`` list (each: ``layer_names`` + ``kv_cache_spec``), block ids as one list per
group (``KVCacheBlocks.get_block_ids()``, ``NewRequestData.block_ids``, ``new_block_ids``), all from one block
pool (ids are unique across groups; block 0 is the pool's ``null_block``, which a sliding-window group holds
for positions outside its window).

Rules:
- Every attention group (full, sliding-window, MLA) is stored in its own namespace: the layout fingerprint of
  that group's layers plus ``;grp=<index>/<groups>`` (one group: the fingerprint is unchanged). Keys are the
  same canonical block hashes in every group. Groups without attention specs (Mamba state) are refused.
- All groups must have the same block size (vLLM's hybrid manager equalises them); otherwise refused.
- A sliding-window group of ``sliding_window`` tokens needs, for a hit ending at block ``e``, only blocks
  ``[e - w, e)`` with ``w = ceil((sliding_window - 1) / block_size) + 1``; the scheduler loads only those and
  skips null blocks; saves skip null blocks.
- Hits are looked up in every group's namespaces (the smallest hit over groups and ranks): a sliding-window
  group's blocks are saved when computed, so its older blocks are normally present too (conservative).
- The worker runs one ``WorkerSide`` per group (its layers, its namespace); loads, saves, errors and finished
  sets are routed by ``LoadSpec.group`` / ``SaveSpec.group`` / layer name and merged back.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Set, Tuple

from .kv_layout import LayoutError, LayoutSpec, ordered_layers
from .vllm_metadata import KvstashConnectorMetadata


def groups_of(kv_cache_config: Any) -> List[Any]:
    return list(getattr(kv_cache_config, "kv_cache_groups", None) or [])


def window_blocks(kspec: Any, block_size: int) -> Optional[int]:
    w = getattr(kspec, "sliding_window", None)
    if not w:
        return None
    return -(-(int(w) - 1) // block_size) + 1


def group_specs(base: LayoutSpec, kv_cache_config: Any) -> List[Tuple[LayoutSpec, Optional[int], List[str]]]:
    """(layout spec, window blocks, layer names) per group; raises LayoutError for groups kvstash cannot store."""
    out = []
    groups = groups_of(kv_cache_config)
    for g, grp in enumerate(groups):
        k: Any = getattr(grp, "kv_cache_spec", None)
        if getattr(k, "head_size", None) is None or getattr(k, "block_size", None) is None:
            raise LayoutError(f"KV-cache group {g} ({type(k).__name__}) is not attention: kvstash stores attention KV only; "
                              "run vLLM with --disable-hybrid-kv-cache-manager")
        if int(k.block_size) != base.block_size:
            raise LayoutError(f"KV-cache group {g} has block size {k.block_size}, group 0 {base.block_size}")
        names = list(getattr(grp, "layer_names", None) or [])
        mla = bool(getattr(k, "use_mla", False) or "MLA" in type(k).__name__)
        heads = 1 if mla else int(getattr(k, "num_kv_heads", base.num_kv_heads))
        spec = dataclasses.replace(base, num_layers=len(names), num_kv_heads=heads, head_size=int(k.head_size), mla=mla)
        out.append((spec, window_blocks(k, base.block_size), names))
    return out


def group_layout(spec: LayoutSpec, g: int, n: int) -> str:
    return spec.fingerprint() if n == 1 else f"{spec.fingerprint()};grp={g}/{n}"


class GroupedWorker:
    """The WorkerSide interface over one WorkerSide per KV-cache group."""

    def __init__(self, workers: List[Any], layer_names: List[List[str]]) -> None:
        self.workers = workers
        self.owner: Dict[str, int] = {n: g for g, names in enumerate(layer_names) for n in names}
        self._md_id: Optional[int] = None
        self._saved_md: Optional[int] = None
        self._md_parts: List[Any] = []
        self._async: Dict[str, Set[int]] = {}  # request -> groups still loading it asynchronously
        self._async_failed: Set[str] = set()

    @property
    def disabled(self) -> Optional[str]:
        return next((f"group {g}: {w.disabled}" for g, w in enumerate(self.workers) if w.disabled), None)

    @property
    def counters(self) -> Dict[str, int]:
        out: Dict[str, int] = {}
        for w in self.workers:
            for k, v in w.counters.items():
                out[k] = out.get(k, 0) + v
        return out

    def _parts(self, md: Any) -> List[Any]:
        if md is None:
            return [None] * len(self.workers)
        if self._md_id != id(md):
            self._md_id = id(md)
            self._md_parts = [KvstashConnectorMetadata(
                loads=[x for x in getattr(md, "loads", None) or [] if getattr(x, "group", 0) == g],
                saves=[x for x in getattr(md, "saves", None) or [] if getattr(x, "group", 0) == g],
                preempted_req_ids=list(getattr(md, "preempted_req_ids", None) or [])) for g in range(len(self.workers))]
        return self._md_parts

    def register_kv_caches(self, kv_caches: Dict[str, Any]) -> None:
        for g, w in enumerate(self.workers):
            mine = {n: t for n, t in kv_caches.items() if self.owner.get(n) == g}
            w.register_kv_caches(mine)
        if set(kv_caches) - set(self.owner):
            for w in self.workers:
                w.disabled = f"layers outside every KV-cache group: {ordered_layers(set(kv_caches) - set(self.owner))[:3]}"

    def start_load_kv(self, md: Any) -> None:
        for w, part in zip(self.workers, self._parts(md)):
            for x in getattr(part, "loads", None) or []:
                if x.is_async:
                    self._async.setdefault(x.req_id, set()).add(self.workers.index(w))
            w.start_load_kv(part)

    def wait_for_layer_load(self, layer_name: str) -> None:
        g = self.owner.get(layer_name)
        if g is not None:
            self.workers[g].wait_for_layer_load(layer_name)

    def save_kv_layer(self, md: Any, layer_name: str) -> None:
        g = self.owner.get(layer_name)
        if g is None:
            return
        if self._saved_md != id(md):  # first save of the step: a request whose load failed in ANY group is not saved
            self._saved_md = id(md)
            for w in self.workers:
                if w._sync and not w._resolved:
                    w._resolve()
            failed = set().union(*(w._failed_reqs for w in self.workers))
            for w in self.workers:
                w._failed_reqs |= failed
        self.workers[g].save_kv_layer(self._parts(md)[g], layer_name)

    def wait_for_save(self) -> None:
        self._saved_md = None
        for w in self.workers:
            w.wait_for_save()

    def _merge_finished(self, per_group: List[Tuple[Set[str], Set[str]]]) -> Tuple[Set[str], Set[str]]:
        done: Set[str] = set()
        for g, (fin, failed) in enumerate(per_group):
            self._async_failed |= failed
            for rid in fin:
                left = self._async.get(rid)
                if left is not None:
                    left.discard(g)
                    if not left:
                        del self._async[rid]
                        done.add(rid)
        failed = {r for r in done if r in self._async_failed}
        self._async_failed -= done
        return done, failed

    def get_finished(self, finished_req_ids: Set[str]) -> tuple:
        parts = []
        for w in self.workers:
            _s, fin = w.get_finished(finished_req_ids)
            failed, w._failed_async = set(w._failed_async), set()
            parts.append((set(fin or ()), failed))
        done, _failed = self._merge_finished(parts)
        return None, (done or None)

    def get_transfer_results(self, finished_req_ids: Set[str]) -> Any:
        from .vllm_compat import KVConnectorTransferResults

        parts = []
        for w in self.workers:
            r = w.get_transfer_results(finished_req_ids)
            parts.append((set(r.finished_recving), set(r.failed_recving)))
        done, failed = self._merge_finished(parts)
        return KVConnectorTransferResults(finished_sending=set(), finished_recving=done, failed_recving=failed)

    def get_block_ids_with_load_errors(self) -> Set[int]:
        out: Set[int] = set()
        for w in self.workers:
            out |= w.get_block_ids_with_load_errors()
        return out

    def build_connector_worker_meta(self) -> Any:
        from .vllm_metadata import KvstashWorkerMetadata

        reasons = [f"group {g}: {w.disabled}" for g, w in enumerate(self.workers) if w.disabled]
        return KvstashWorkerMetadata(reasons) if reasons else None

    def handle_preemptions(self, arg: Any) -> None:
        for w in self.workers:
            w.handle_preemptions(arg)

    def shutdown(self) -> None:
        for w in self.workers:
            w.shutdown()
