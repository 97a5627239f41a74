"""GPU check of the vLLM connector's worker data path (run by hand on a CUDA machine; not part of CI).

    PYTHONPATH=adapters/python python3 test/integration/py/vllm_gpu_check.py [cuda|cpu]

The transport is replaced by an in-memory store (the GPU machines here have no pyzmq and no sidecar; the
wire path is covered by test/integration/vllm-connector.test.ts on CPU). What runs for real: layout
detection on CUDA tensors, per-layer gathers into pinned staging, wait_for_save's copy-before-return
contract (the blocks are overwritten right after it returns), the saver thread's transpose, loads scattered
layer by layer from pinned buffers, asynchronous loads on a side stream, and blocks that must not change.
Prints one line per case and exits non-zero on any mismatch.
"""
from __future__ import annotations

import sys
import threading
import time
import types
from types import SimpleNamespace

try:
    import zmq  # noqa: F401
except ImportError:  # the transport is replaced below; kvstash.client only needs the name at import
    _zmq = types.ModuleType("zmq")

    def _zmq_constant(name):  # kvstash.auth reads socket constants at import
        if name.isupper():
            return 0
        raise AttributeError(name)

    _zmq.__getattr__ = _zmq_constant  # type: ignore[attr-defined]
    sys.modules["zmq"] = _zmq

import torch

from kvstash.hashing import namespace_id
from kvstash.vllm import KvstashConnector
from kvstash.vllm_compat import KVConnectorRole
from kvstash.vllm_metadata import KvstashConnectorMetadata, LoadSpec, SaveSpec

DEV = sys.argv[1] if len(sys.argv) > 1 else "cuda"


class MemClient:
    def __init__(self, store, lock):
        self.store, self.lock = store, lock

    def namespace(self, desc, timeout_ms=None):
        return namespace_id(desc)

    def put_many(self, ns, keys, blocks, timeout_ms=None, **kw):
        with self.lock:
            for k, b in zip(keys, blocks):
                self.store[(ns, bytes(k))] = bytes(memoryview(b))
        return [0] * len(keys)

    def get_many(self, ns, keys, timeout_ms=None, **kw):
        with self.lock:
            return [memoryview(self.store[(ns, bytes(k))]) if (ns, bytes(k)) in self.store else None for k in keys]


class MemClients:
    def __init__(self):
        self.store, self.lock = {}, threading.Lock()

    def get(self):
        return MemClient(self.store, self.lock)

    def close_current(self):
        pass

    def close_all(self):
        pass


def connector(layout, L, nb, H, D, dtype, clients, extra=None):
    mla = layout == "mla"
    ktc = SimpleNamespace(kv_role="kv_both", kv_connector_extra_config={"endpoint": "ipc:///nonexistent", "load_timeout_ms": 20000,
                                                                        "save_timeout_ms": 20000, "max_pending_save_bytes": 8 << 30, **(extra or {})})
    mc = SimpleNamespace(model="gpu-check", dtype=dtype, use_mla=mla, hf_config=SimpleNamespace(num_hidden_layers=L),
                         get_num_kv_heads=lambda pc: 1 if mla else H, get_head_size=lambda: D)
    vc = SimpleNamespace(kv_transfer_config=ktc, model_config=mc, cache_config=SimpleNamespace(block_size=16, cache_dtype="auto"),
                         parallel_config=SimpleNamespace(tensor_parallel_size=1, pipeline_parallel_size=1, rank=0))
    kcc = SimpleNamespace(num_blocks=nb, kv_cache_groups=[SimpleNamespace(layer_names=[], kv_cache_spec=SimpleNamespace(
        block_size=16, num_kv_heads=1 if mla else H, head_size=D, dtype=dtype, use_mla=mla))])
    c = KvstashConnector(vc, KVConnectorRole.WORKER, kcc)
    c._worker.clients = clients
    names = [f"model.layers.{i}.self_attn.attn" for i in range(L)]
    shape = {"kv_first": (2, nb, 16, H, D), "blocks_first": (nb, 2, 16, H, D), "hnd": (nb, 2, H, 16, D), "mla": (nb, 16, D)}[layout]
    kv = {}
    for n in names:
        t = torch.randint(-30000, 30000, shape, dtype=torch.int16, device=DEV).view(getattr(torch, dtype))
        kv[n] = t.permute(0, 1, 3, 2, 4) if layout == "hnd" else t
    c.register_kv_caches(kv)
    assert c._worker.disabled is None, c._worker.disabled
    return c, names, kv


def block_bytes(kv, names, layout, b):
    """Canonical bytes of block b, computed independently of the connector."""
    parts = []
    for n in names:
        t = kv[n][:, b] if layout == "kv_first" else kv[n][b]
        parts.append(t.contiguous().view(-1).view(torch.uint8).cpu())
    return bytes(torch.cat(parts).numpy())


def sync():
    if DEV == "cuda":
        torch.cuda.synchronize()


def run_case(src, dst, L=8, nb=384, n=128, H=8, D=128, dtype="bfloat16", timing=False):
    D = 64 if src == "mla" and not timing else D
    clients = MemClients()
    a, names, kva = connector(src, L, nb, H, D, dtype, clients)
    g = torch.Generator().manual_seed(1)
    perm = torch.randperm(nb, generator=g).tolist()
    S, Dst, Dst2 = perm[:n], perm[n:2 * n], perm[2 * n:3 * n]
    keys = [torch.randint(0, 256, (32,), dtype=torch.uint8, generator=g).numpy().tobytes() for _ in range(n)]
    ref = [block_bytes(kva, names, src, b) for b in S]
    md = KvstashConnectorMetadata(saves=[SaveSpec(f"s{i}", keys[i:i + 16], S[i:i + 16]) for i in range(0, n, 16)])
    sync()
    t0 = time.perf_counter()
    a.bind_connector_metadata(md)
    a.start_load_kv(None)
    for nm in names:
        a.wait_for_layer_load(nm)
        a.save_kv_layer(nm, kva[nm], None)
    a.wait_for_save()
    t_save_fwd = time.perf_counter() - t0
    idx = torch.tensor(S, device=DEV)
    for nm in names:  # vLLM may overwrite the blocks as soon as wait_for_save returns
        (kva[nm].index_fill_(1, idx, 0) if src == "kv_first" else kva[nm].index_fill_(0, idx, 0))
    a._worker._wait(a._worker._save_futures, time.monotonic() + 60)
    t_save_all = time.perf_counter() - t0
    ns = namespace_id(a._worker.desc)
    stored = [clients.store.get((ns, k)) for k in keys]
    bad_save = sum(1 for x, r in zip(stored, ref) if x != r)
    results = {"save_mismatch": bad_save}
    for mode, ids in (("sync", Dst), ("async", Dst2)):
        b, _, kvb = connector(dst, L, nb, H, D, dtype, clients, {"load_kv_async": mode == "async"})
        before = {nm: kvb[nm].clone() for nm in names}
        md = KvstashConnectorMetadata(loads=[LoadSpec(f"l{i}", keys[i:i + 16], ids[i:i + 16], is_async=mode == "async") for i in range(0, n, 16)])
        sync()
        t0 = time.perf_counter()
        b.bind_connector_metadata(md)
        b.start_load_kv(None)
        for nm in names:
            b.wait_for_layer_load(nm)
        b.wait_for_save()
        done = set()
        while len(done) < len(md.loads) and mode == "async":
            _, r = b.get_finished(set())
            done |= set(r or ())
            time.sleep(0.001)
        errs = b.get_block_ids_with_load_errors()
        sync()
        t_load = time.perf_counter() - t0
        bad = sum(1 for i, blk in enumerate(ids) if block_bytes(kvb, names, dst, blk) != ref[i])
        others = [x for x in range(nb) if x not in set(ids)]
        oi = torch.tensor(others, device=DEV)
        touched = 0
        for nm in names:
            sel = (lambda t: t[:, oi]) if dst == "kv_first" else (lambda t: t[oi])
            if not torch.equal(sel(kvb[nm]).contiguous().view(torch.uint8), sel(before[nm]).contiguous().view(torch.uint8)):
                touched += 1
        results[f"{mode}_load_mismatch"] = bad
        results[f"{mode}_errors"] = len(errs)
        results[f"{mode}_other_layers_touched"] = touched
        results[f"{mode}_load_s"] = round(t_load, 4)
        b.shutdown()
    a.shutdown()
    mb = n * len(ref[0]) / 1e6
    print(f"{src:>12} -> {dst:<12} {dtype} L={L} blocks={n} x {len(ref[0]) >> 10} KiB: {results}  "
          f"save fwd-blocking {t_save_fwd * 1e3:.1f} ms ({mb / 1e3 / t_save_fwd:.2f} GB/s), save+store {t_save_all * 1e3:.1f} ms, "
          f"load sync {mb / 1e3 / results['sync_load_s']:.2f} GB/s (in-memory store)", flush=True)
    return all(v == 0 for k, v in results.items() if not k.endswith("_s"))


def main():
    print(f"device {DEV}: torch {torch.__version__}" + (f", {torch.cuda.get_device_name()}" if DEV == "cuda" else ""), flush=True)
    ok = True
    for src, dst in (("kv_first", "hnd"), ("blocks_first", "kv_first"), ("hnd", "blocks_first"), ("mla", "mla")):
        ok &= run_case(src, dst)
    for _ in range(2):  # Llama-3.1-8B shape, 2 MiB blocks; the second run reuses cached pinned host memory
        ok &= run_case("blocks_first", "blocks_first", L=32, nb=768, n=256, timing=True)
    print("GPU CHECK", "OK" if ok else "FAILED", flush=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
