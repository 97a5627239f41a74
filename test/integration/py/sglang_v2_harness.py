#!/usr/bin/env python3
"""Drives kvstash.sglang.KvstashHiCacheStorage through SGLang's v2 storage API, as the hybrid-model cache
controllers do (python/sglang/srt/mem_cache/hicache_storage.py @ 001067ff: PoolTransfer, PoolHitPolicy,
register_mem_host_pool_v2): a KV host pool (sglang_harness.HostPool, zero-copy v1 path) next to a Mamba state
pool (one state per request, ``trailing_pages`` on the last page key), a sliding-window pool (``trailing_pages``
over the last ``window`` pages) and a DSA indexer pool (``all_pages``), all with flat data pages.

Modes (JSON on stdin: {"mode", "endpoint", "seed", "pages", "window"}):
- ``write``: fill every pool from the seed and back the prefix up with one batch_set_v2;
- ``read``: fresh pools (zeros), batch_exists_v2 over the prefix and its extension, batch_get_v2 of the hit,
  and a byte compare against the writer's pools (regenerated from the seed);
- ``guard``: malformed calls from a worker thread (as SGLang's prefetch/backup threads make them by mistake):
  the thread must survive and every call answer its failure value.
Prints one JSON object.
"""
import json
import os
import sys
import threading
from dataclasses import dataclass
from typing import Any, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from sglang_harness import HostPool, StorageConfig, indices, page_keys  # noqa: E402

from kvstash.sglang import KvstashHiCacheStorage  # noqa: E402

PS = 16


@dataclass
class PoolTransfer:
    """SGLang's PoolTransfer fields (hicache_storage.py @ 001067ff)."""

    name: str
    host_indices: Optional[torch.Tensor] = None
    device_indices: Optional[torch.Tensor] = None
    keys: Optional[List[str]] = None
    hit_policy: str = "all_pages"


class FlatPool:
    """A host pool of flat data pages (Mamba states: page_size 1; SWA / indexer: PS tokens a page)."""

    def __init__(self, slots: int, page_size: int, page_elems: int, seed: Optional[int]) -> None:
        self.page_size = page_size
        g = torch.Generator().manual_seed(seed if seed is not None else 0)
        self.data = torch.randn(slots, page_elems, generator=g) if seed is not None else torch.zeros(slots, page_elems)

    def get_data_page(self, index: int, flat: bool = True) -> torch.Tensor:
        return self.data[index // self.page_size].clone()

    def get_dummy_flat_data_page(self) -> torch.Tensor:
        return torch.zeros_like(self.data[0])

    def set_from_flat_data_page(self, index: int, page: torch.Tensor) -> None:
        self.data[index // self.page_size].copy_(page.view(-1))


def pools(pages: int, seed: Optional[int]):
    kv = HostPool("layer_first", pages + 4, PS, 2, 2, 16, seed=seed)
    return {"kv": kv, "mamba": FlatPool(4, 1, 96, None if seed is None else seed + 1),
            "swa": FlatPool(pages + 4, PS, 40, None if seed is None else seed + 2),
            "indexer": FlatPool(pages + 4, PS, 24, None if seed is None else seed + 3)}


def backend(endpoint: str, ps: dict) -> Any:
    b = KvstashHiCacheStorage(StorageConfig(extra={"endpoint": endpoint, "interface_v1": 1, "timeout_ms": 3000}))
    for name, p in ps.items():
        b.register_mem_host_pool_v2(p, name)
    return b


def transfers(keys: List[str], window: int, mamba_slot: int):
    n = len(keys)
    kv_idx = indices(list(range(n)), PS)
    sw = list(range(max(0, n - window), n))
    return [PoolTransfer("kv", kv_idx, keys=keys),
            PoolTransfer("mamba", torch.tensor([mamba_slot]), keys=keys[-1:], hit_policy="trailing_pages"),
            PoolTransfer("swa", indices(sw, PS), keys=[keys[i] for i in sw], hit_policy="trailing_pages"),
            PoolTransfer("indexer", kv_idx.clone(), keys=keys)]


def main() -> None:
    req = json.load(sys.stdin)
    ep, seed, n, window = req["endpoint"], req.get("seed", 1), req.get("pages", 6), req.get("window", 2)
    keys = page_keys(n + 2, PS, seed)
    if req["mode"] == "write":
        ps = pools(n, seed)
        b = backend(ep, ps)
        res = b.batch_set_v2(transfers(keys[:n], window, 2))
        print(json.dumps({"set": res, "stats": b.get_stats()}))
        return
    if req["mode"] == "read":
        ps, truth = pools(n, None), pools(n, seed)
        b = backend(ep, ps)
        out = {}
        mk = lambda ks: [t for t in transfers(ks, window, 1)[1:]]  # noqa: E731  (exists_v2 takes the extra pools)
        e = b.batch_exists_v2(keys[:n], mk(keys[:n]))
        out["exists_full"] = [e.kv_hit_pages, {str(k): v for k, v in e.extra_pool_hit_pages.items()}]
        e = b.batch_exists_v2(keys[:n + 1], mk(keys[:n + 1]))  # one page more: its Mamba state is not stored
        out["exists_longer"] = [e.kv_hit_pages, {str(k): v for k, v in e.extra_pool_hit_pages.items()}]
        e = b.batch_exists_v2(keys[:n - 1], mk(keys[:n - 1]))  # a shorter prefix: no state was saved there
        out["exists_shorter"] = [e.kv_hit_pages, {str(k): v for k, v in e.extra_pool_hit_pages.items()}]
        got = b.batch_get_v2(transfers(keys[:n], window, 1))
        out["get"] = got
        same = {}
        kvp, kvt = ps["kv"], truth["kv"]
        bits = lambda t: t.contiguous().view(torch.int16)  # noqa: E731  (random bf16 bits hold NaNs: compare bits)
        same["kv"] = all(torch.equal(bits(kvp.page_view(i * PS)), bits(kvt.page_view(i * PS))) for i in range(n))
        same["mamba"] = torch.equal(ps["mamba"].data[1], truth["mamba"].data[2])
        same["swa"] = all(torch.equal(ps["swa"].data[i], truth["swa"].data[i]) for i in range(n - window, n))
        same["indexer"] = all(torch.equal(ps["indexer"].data[i], truth["indexer"].data[i]) for i in range(n))
        out["same"] = same
        print(json.dumps(out))
        return
    # guard: malformed calls on a thread; none may raise
    b = backend(ep, pools(n, None))
    out = {}

    def calls() -> None:
        out["batch_get_v1"] = b.batch_get_v1(None, None)
        out["batch_set"] = b.batch_set(keys[:1], 5)
        out["batch_get_v2"] = b.batch_get_v2([PoolTransfer("nosuchpool", torch.arange(PS), keys=keys[:1])])
        out["batch_set_v2"] = b.batch_set_v2([PoolTransfer("swa", torch.arange(3), keys=keys[:1])])
        out["batch_exists_v2"] = b.batch_exists_v2(keys[:2], [object()]).kv_hit_pages
        out["batch_exists"] = b.batch_exists(keys[:2], extra_info=object())
        out["done"] = True

    t = threading.Thread(target=calls, daemon=True)
    t.start()
    t.join(30)
    out["thread_alive_after"] = t.is_alive()
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
