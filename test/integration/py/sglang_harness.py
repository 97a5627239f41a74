#!/usr/bin/env python3
"""Drives kvstash.sglang.KvstashHiCacheStorage the way SGLang's HiCache controller does, over an emulated
host (L2) pool in CPU torch memory. Written from docs/engine-interfaces.md §4 (no SGLang code).

Host pool (§4.4): ``kv_buffer`` of
  MHA  layer_first (2, layer, size, head, dim) · page_first (2, size, layer, head, dim)
       · page_first_direct (2, page_num, layer, page_size, head, dim)
  MLA  layer_first (layer, size, 1, kv_dim) · page_first (size, layer, 1, kv_dim)
       · page_first_direct (page_num, layer, page_size, 1, kv_dim)
``get_page_buffer_meta(host_indices)`` (§4.5): per page, layer_first gives 2 × layer pointers (K and V of each
layer, interleaved; MLA: one per layer) of page_size × head × dim × itemsize bytes; page_first and
page_first_direct give 2 pointers (K, V; MLA: one) of layer × page_size × head × dim × itemsize bytes.

Controller (§4.6): prefetch = batch_exists in batches of 128 pages, stopping at the first batch that is not a
full hit; nothing is loaded below ``threshold`` tokens; then batch_get_v1 of the hit prefix in batches of 128,
counting leading True. Backup = batch_set_v1 in batches of 128, stopping at the first batch with a False.
Generic path (interface_v1 off): batch_set of flat data pages / batch_get into dummy flat pages.

Usage: ``sglang_harness.py`` reads {"mode": "write"|"read"|"down", "endpoint": ..., "timeout_ms": ...,
"cases": [...]} as JSON on stdin and prints {"results": [...]} — one result per case. Page keys follow §4.3
(chained SHA-256 over little-endian u32 tokens). Pool contents derive from the case seed, so a reader process
regenerates exactly what the writer held.
"""
import hashlib
import json
import struct
import sys
import time

import torch

from kvstash.sglang import KvstashHiCacheStorage

BATCH = 128


class StorageConfig:
    def __init__(self, tp_rank=0, tp_size=1, is_mla=False, layout="layer_first", model="harness/model", extra=None):
        self.tp_rank, self.tp_size, self.is_mla_model = tp_rank, tp_size, is_mla
        self.pp_rank, self.pp_size = 0, 1
        self.is_page_first_layout = layout != "layer_first"
        self.model_name = model
        self.extra_config = extra or {}


class HostPool:
    """Emulates SGLang's MHA/MLA host pool: layout, page_size, dtype and get_page_buffer_meta as in §4.4/4.5."""

    def __init__(self, layout, pages, page_size, layers, heads, dim, mla=False, seed=None):
        self.layout, self.page_size, self.layer_num, self.dtype = layout, page_size, layers, torch.bfloat16
        self.size = pages * page_size
        self.mla = mla
        if mla:
            self.kv_lora_rank, self.qk_rope_head_dim = dim - 16, 16
            shape = {"layer_first": (layers, self.size, 1, dim), "page_first": (self.size, layers, 1, dim),
                     "page_first_direct": (pages, layers, page_size, 1, dim)}[layout]
        else:
            self.head_num, self.head_dim = heads, dim
            shape = {"layer_first": (2, layers, self.size, heads, dim), "page_first": (2, self.size, layers, heads, dim),
                     "page_first_direct": (2, pages, layers, page_size, heads, dim)}[layout]
        if seed is None:
            bits = torch.zeros(shape, dtype=torch.int16)
        else:
            g = torch.Generator().manual_seed(seed)
            bits = torch.randint(-(2 ** 15), 2 ** 15, shape, dtype=torch.int16, generator=g)
        self.kv_buffer = bits.view(torch.bfloat16)

    def page_view(self, t):
        """The pool's memory of the page starting at token index t (layout-aware)."""
        kv, ps = self.kv_buffer, self.page_size
        if self.mla:
            return {"layer_first": lambda: kv[:, t:t + ps], "page_first": lambda: kv[t:t + ps],
                    "page_first_direct": lambda: kv[t // ps]}[self.layout]()
        return {"layer_first": lambda: kv[:, :, t:t + ps], "page_first": lambda: kv[:, t:t + ps],
                "page_first_direct": lambda: kv[:, t // ps]}[self.layout]()

    def get_page_buffer_meta(self, host_indices):
        kv, ps, item = self.kv_buffer, self.page_size, self.kv_buffer.element_size()
        ptrs, sizes = [], []
        for t in host_indices.tolist()[::ps]:
            if self.mla:
                if self.layout == "layer_first":
                    for layer in range(self.layer_num):
                        ptrs.append(kv[layer, t].data_ptr())
                        sizes.append(ps * kv.shape[-1] * item)
                else:
                    ptrs.append(kv[t].data_ptr() if self.layout == "page_first" else kv[t // ps].data_ptr())
                    sizes.append(ps * self.layer_num * kv.shape[-1] * item)
                continue
            if self.layout == "layer_first":
                for layer in range(self.layer_num):
                    for kv_i in (0, 1):
                        ptrs.append(kv[kv_i, layer, t].data_ptr())
                        sizes.append(ps * self.head_num * self.head_dim * item)
            else:
                for kv_i in (0, 1):
                    ptrs.append(kv[kv_i, t].data_ptr() if self.layout == "page_first" else kv[kv_i, t // ps].data_ptr())
                    sizes.append(self.layer_num * ps * self.head_num * self.head_dim * item)
        return ptrs, sizes

    def get_data_page(self, t, flat=True):
        p = self.page_view(t).contiguous()
        return p.flatten() if flat else p

    def set_from_flat_data_page(self, t, data):
        v = self.page_view(t)
        v.copy_(data.view(v.shape))


def page_keys(n, page_size, seed):
    """§4.3: h_0 = sha256(tokens), h_i = sha256(bytes(h_{i-1}) ‖ tokens), tokens as u32 little-endian."""
    keys, prev = [], b""
    for p in range(n):
        toks = struct.pack(f"<{page_size}I", *[(seed * 1000003 + p * page_size + i) % 150000 for i in range(page_size)])
        prev = hashlib.sha256(prev + toks).digest()
        keys.append(prev.hex())
    return keys


def slots(pages, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(pages, generator=g).tolist()


def indices(slot_list, page_size):
    return torch.cat([torch.arange(s * page_size, (s + 1) * page_size, dtype=torch.int64) for s in slot_list]) if slot_list else torch.zeros(0, dtype=torch.int64)


def backup(backend, keys, pool, slot_list, v1=True):
    done = 0
    for a in range(0, len(keys), BATCH):
        ks = keys[a:a + BATCH]
        if v1:
            ok = backend.batch_set_v1(ks, indices(slot_list[a:a + len(ks)], pool.page_size))
        else:
            ok = [backend.batch_set(ks, [pool.get_data_page(s * pool.page_size) for s in slot_list[a:a + len(ks)]])] * len(ks)
        assert isinstance(ok, list) and len(ok) == len(ks), f"batch_set returned {ok!r}"
        if not all(ok):
            break
        done += len(ks)
    return done


def prefetch(backend, keys, pool, slot_list, threshold, v1=True):
    hit = 0
    for a in range(0, len(keys), BATCH):
        n = backend.batch_exists(keys[a:a + BATCH])
        assert isinstance(n, int), f"batch_exists returned {n!r}"
        hit += n
        if n < len(keys[a:a + BATCH]):
            break
    if hit * pool.page_size < max(threshold, pool.page_size):
        return hit, 0
    loaded = 0
    for a in range(0, hit, BATCH):
        ks = keys[a:min(hit, a + BATCH)]
        if v1:
            ok = backend.batch_get_v1(ks, indices(slot_list[a:a + len(ks)], pool.page_size))
        else:
            flat = [torch.zeros(pool.get_data_page(0).numel(), dtype=pool.dtype) for _ in ks]
            got = backend.batch_get(ks, flat)
            ok = [g is not None for g in got]
            for i, g in enumerate(got):
                if g is not None:
                    pool.set_from_flat_data_page(slot_list[a + i] * pool.page_size, g)
        assert isinstance(ok, list) and len(ok) == len(ks), f"batch_get returned {ok!r}"
        lead = 0
        while lead < len(ok) and ok[lead]:
            lead += 1
        loaded += lead
        if lead < len(ks):
            break
    return hit, loaded


def make(case, endpoint, timeout_ms, rank=None):
    v1 = case.get("v1", True)
    extra = {"endpoint": endpoint, "timeout_ms": timeout_ms, "interface_v1": 1 if v1 else 0, "tenant": case.get("tenant", "default")}
    cfg = StorageConfig(case.get("tp_rank", 0) if rank is None else rank, case.get("tp_size", 1), case.get("mla", False), case["layout"], extra=extra)
    backend = KvstashHiCacheStorage(cfg, extra)
    pool_args = (case["layout"], case["pool_pages"], case["page_size"], case["layers"], case["heads"], case["dim"], case.get("mla", False))
    return backend, pool_args, v1


def run_case(mode, case, endpoint, timeout_ms):
    backend, pool_args, v1 = make(case, endpoint, timeout_ms, case.get("rank"))
    n, ps, seed = case["pages"], case["page_size"], case["seed"]
    keys = page_keys(n, ps, seed)
    try:
        if mode == "write":
            pool = HostPool(*pool_args, seed=seed)
            backend.register_mem_pool_host(pool)
            written = backup(backend, keys[:case.get("write_pages", n)], pool, slots(case["pool_pages"], seed)[:n], v1)
            return {"written": written, "stats": backend.get_stats()}
        # read: a fresh, zeroed pool with other slots; expected bytes regenerated from the writer's seed
        pool = HostPool(*pool_args)
        backend.register_mem_pool_host(pool)
        mine = slots(case["pool_pages"], seed + 1)[:n]
        hit, loaded = prefetch(backend, keys, pool, mine, case.get("threshold", 0), v1)
        src = HostPool(*pool_args, seed=seed)
        theirs = slots(case["pool_pages"], seed)[:n]
        same = [torch.equal(pool.page_view(mine[p] * ps).view(torch.int16), src.page_view(theirs[p] * ps).view(torch.int16)) for p in range(loaded)]
        untouched = all(int(pool.page_view(mine[p] * ps).view(torch.int16).abs().sum()) == 0 for p in range(loaded, n))
        return {"exists": hit, "loaded": loaded, "bitwise": all(same), "pages_equal": sum(same), "untouched_zero": untouched, "stats": backend.get_stats()}
    finally:
        backend.close()


def run_down(case, endpoint, timeout_ms):
    """Every call against an absent sidecar: False / 0 / None, no exception, bounded time."""
    backend, pool_args, _ = make(case, endpoint, timeout_ms)
    pool = HostPool(*pool_args, seed=1)
    backend.register_mem_pool_host(pool)
    keys = page_keys(case["pages"], case["page_size"], 7)
    idx = indices(list(range(case["pages"])), case["page_size"])
    calls = {
        "batch_exists": lambda: backend.batch_exists(keys),
        "batch_get_v1": lambda: backend.batch_get_v1(keys, idx),
        "batch_set_v1": lambda: backend.batch_set_v1(keys, idx),
        "exists": lambda: backend.exists(keys[0]),
        "get": lambda: backend.get(keys[0]),
        "set": lambda: backend.set(keys[0], pool.get_data_page(0)),
        "batch_get": lambda: backend.batch_get(keys[:4]),
        "batch_set": lambda: backend.batch_set(keys[:2], [pool.get_data_page(0), pool.get_data_page(case["page_size"])]),
    }
    out = {}
    for rnd in ("first", "again"):
        for name, fn in calls.items():
            t0 = time.monotonic()
            try:
                r = fn()
                err = None
            except BaseException as e:  # the point of the test: nothing may escape
                r, err = None, repr(e)
            out[f"{rnd}:{name}"] = {"ms": (time.monotonic() - t0) * 1000, "error": err,
                                    "result": r if isinstance(r, (bool, int, type(None))) else [x if isinstance(x, (bool, type(None))) else "value" for x in r]}
        if rnd == "first":
            time.sleep(case.get("sleep_s", 0))
    out["stats"] = backend.get_stats()
    backend.close()
    return out


def main():
    req = json.load(sys.stdin)
    mode, ep, tmo = req["mode"], req["endpoint"], req.get("timeout_ms", 5000)
    results = []
    for case in req["cases"]:
        results.append(run_down(case, ep, tmo) if mode == "down" else run_case(mode, case, ep, tmo))
    print(json.dumps({"results": results}))


if __name__ == "__main__":
    main()
