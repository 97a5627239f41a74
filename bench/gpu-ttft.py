#!/usr/bin/env python3
"""GPU benchmark: prefill recompute vs loading the same prefix's KV through the kvstash vLLM worker path.

Run by hand on one CUDA GPU (not part of ``npm run bench``; CI has no GPU)::

    PYTHONPATH=adapters/python PYTHONUNBUFFERED=1 python3 bench/gpu-ttft.py            # Llama-3.1-8B shape
    PYTHONPATH=adapters/python /usr/bin/python3 bench/gpu-ttft.py --tiny               # CPU smoke test
    ... bench/gpu-ttft.py --loads-only      # no model, loads of random KV only (also runs an older worker:
                                            # PYTHONPATH=<older adapters/python>)
    ... bench/gpu-ttft.py --arena           # blocks in an arena file as the sidecar lays out its DRAM tier:
                                            # the worker's same-host path (descriptor round trip left out)

Model: a hand-written Llama-3.1-8B-shaped decoder in plain torch with RANDOM weights (no download): 32 layers of
RMSNorm, GQA attention (32 query / 8 KV heads x 128, RoPE, causal), SwiGLU MLP 4096 -> 14336, bf16, batch 1,
plus the embedding and the last token's LM head. Attention is ``scaled_dot_product_attention`` where torch has it
(flash on GPUs), else matmul + softmax. transformers is not used (this machine's torch 1.13 has none, and the
hand-written stack is deterministic and is all the FLOPs that matter).

Per prompt length S (prefix P = the cached fraction of S rounded down to 16-token blocks, suffix S - P):
  prefill      full prefill of S tokens (warm-up first, median of --reps, synchronized wall time)
  suffix       prefill of the S - P new tokens ATTENDING TO the P prefix tokens' KV (fed as past KV: the KV that
               kvstash loaded, read back from the paged cache) - what a multi-turn request computes after a hit
  kvstash      the real connector worker path (kvstash.vllm.KvstashConnector, role WORKER): register_kv_caches on
               a paged blocks_first bf16 cache, bind metadata with one LoadSpec for P/16 blocks, start_load_kv,
               wait_for_layer_load for each of the 32 layers, synchronize. The blocks (2 MiB each for the 8B
               shape) sit in host memory as bytes - as they arrive from the sidecar's DRAM tier - in an in-memory
               store that replaces the sidecar client (the ZeroMQ transfer itself is NOT included; see
               bench/python-connector.py for that). The worker copies them into pinned layer-major staging and
               scatters layer by layer. ``layer 0``: until layer 0 is in the paged cache (mostly staging).
               ``cold`` is the first load of that size (pinned staging allocated), the others reuse it.
  H2D pin/unpin  the ceiling: one torch host->device copy of the same bytes from pinned / pageable memory.
  TTFT cut     (prefill(S) - (kvstash(P) + suffix)) / prefill(S), the estimated TTFT reduction.
Checks (each run; ``ok``): the loaded blocks equal the model's own KV bit for bit, blocks not loaded are untouched,
no load errors, and the suffix's final hidden states computed over the loaded KV are close to the full prefill's
(``rel err``; bf16 kernel differences alone give ~0.05 on an H200, so this only catches gross errors).
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import threading
import time
import types
from types import SimpleNamespace

try:
    import zmq  # noqa: F401
except ImportError:  # GPU machines have no pyzmq; the transport is replaced by an in-memory store below
    _zmq = types.ModuleType("zmq")

    def _zmq_constant(name):  # kvstash.auth reads socket constants at import
        if name.isupper():
            return 0
        raise AttributeError(name)

    _zmq.__getattr__ = _zmq_constant
    sys.modules["zmq"] = _zmq

import torch
import torch.nn.functional as F

from kvstash.hashing import namespace_id
from kvstash.vllm import KvstashConnector
from kvstash.vllm_compat import KVConnectorRole
from kvstash.vllm_metadata import KvstashConnectorMetadata, LoadSpec

BS = 16  # tokens per KV block (vLLM default)
ARENA = "--arena" in sys.argv
LLAMA_8B = dict(layers=32, hidden=4096, q_heads=32, kv_heads=8, head_dim=128, ffn=14336, vocab=128256)
TINY = dict(layers=2, hidden=256, q_heads=4, kv_heads=2, head_dim=64, ffn=512, vocab=1000)


# ---- in-memory store standing in for the sidecar client (same idea as test/integration/py/vllm_gpu_check.py) ----

class MemClient:
    def __init__(self, store, lock):
        self.store, self.lock = store, lock

    def namespace(self, desc, timeout_ms=None):
        return namespace_id(desc)

    def get_many(self, ns, keys, timeout_ms=None, **kw):
        with self.lock:
            return [memoryview(self.store[(ns, k)]) if (ns, k) in self.store else None for k in keys]


class ArenaMemClient(MemClient):
    """``--arena``: the blocks lie in an arena file laid out exactly as the sidecar lays out its DRAM tier
    (connector/storage/arena-layout.ts: one header page per slot, consecutive slots at one stride), and lease GETs
    answer descriptors, so the worker takes its same-host path (scatter from the arena on CPU; one DMA per run from
    the CUDA-registered arena on GPUs, then the slot check). Only the descriptor round trip to the sidecar is left out."""

    def __init__(self, store, lock, arena):
        super().__init__(store, lock)
        self.arena, self.slots, self.size = arena
        self.ns_raw = None

    def arena_of(self, ns):
        return self.arena

    def lease_get(self, ns, keys, timeout_ms=None):
        from kvstash.arena import LeasedGet

        got = [self.slots.get((ns, k)) for k in keys]
        header = {"sizes": [self.size if g else -1 for g in got], "slots": [list(g) if g else None for g in got], "lease": 0}
        return LeasedGet(self, self.arena, ns, b"".join(keys), header, [])

    def send_only(self, header):
        pass


def arena_file(blocks, keys, ns):
    """Write blocks (n, nbytes uint8) into a fresh arena file; returns (ArenaMap, {(ns, key): (offset, gen)}, nbytes)."""
    import os
    import struct
    import tempfile

    from kvstash.arena import PAGE, ArenaMap, SLOT_MAGIC, LIVE

    n, nbytes = blocks.shape
    stride = PAGE + -(-nbytes // PAGE) * PAGE
    fd, path = tempfile.mkstemp(prefix="kvstash-gpu-ttft-", suffix=".arena", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    os.ftruncate(fd, PAGE + n * stride)
    os.pwrite(fd, b"KVSARENA" + bytes(8) + os.urandom(16) + struct.pack("<III", PAGE, 96, 256 << 20), 0)
    slots = {}
    for i, k in enumerate(keys):
        off = PAGE + i * stride + PAGE
        os.pwrite(fd, struct.pack("<IIQQ", SLOT_MAGIC, LIVE, i + 1, nbytes) + bytes(8) + k + bytes.fromhex(ns), off - PAGE)
        os.pwrite(fd, blocks[i].numpy().tobytes(), off)
        slots[(ns, k)] = (off, i + 1)
    os.close(fd)
    m = ArenaMap({"id": "bench", "path": path})
    os.unlink(path)  # the mapping keeps it
    return m, slots, nbytes


class MemClients:
    def __init__(self, arena=None):
        self.store, self.lock, self.arena = {}, threading.Lock(), arena

    def get(self):
        return ArenaMemClient(self.store, self.lock, self.arena) if self.arena else MemClient(self.store, self.lock)

    def close_current(self):
        pass

    def close_all(self):
        pass


# ---- minimal Llama-shaped decoder ----------------------------------------------------------------------------

class Llama:
    def __init__(self, c, device, dtype, seed=0):
        g = torch.Generator(device=device).manual_seed(seed)
        self.c, self.dev, self.dt = c, device, dtype
        H, D, q, kv = c["hidden"], c["head_dim"], c["q_heads"], c["kv_heads"]

        def w(*shape):
            return (torch.randn(*shape, generator=g, device=device, dtype=torch.float32) * 0.02).to(dtype)

        self.emb = w(c["vocab"], H)
        self.layers = [dict(n1=torch.ones(H, device=device, dtype=dtype), qkv=w((q + 2 * kv) * D, H), o=w(H, q * D),
                            n2=torch.ones(H, device=device, dtype=dtype), gu=w(2 * c["ffn"], H), down=w(H, c["ffn"]))
                       for _ in range(c["layers"])]
        self.norm = torch.ones(H, device=device, dtype=dtype)
        self.head = w(c["vocab"], H)
        inv = 1.0 / (500000.0 ** (torch.arange(0, D, 2, device=device, dtype=torch.float32) / D))
        self.inv_freq = inv

    def _rms(self, x, wt):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5)).to(x.dtype) * wt

    def _rope(self, x, cos, sin):  # x (S, heads, D), rotate-half convention
        h = x.shape[-1] // 2
        x1, x2 = x[..., :h].float(), x[..., h:].float()
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1).to(x.dtype)

    def forward(self, ids, past=None, keep_kv=False):
        """ids (S,) int64; past: list per layer of (k, v) each (P, kv_heads, D) or None.
        Returns (final normed hidden (S, H), last-token logits, [(k, v)] of these S tokens if keep_kv)."""
        c = self.c
        S, q, kvh, D = ids.shape[0], c["q_heads"], c["kv_heads"], c["head_dim"]
        off = past[0][0].shape[0] if past else 0
        pos = torch.arange(off, off + S, device=self.dev, dtype=torch.float32)
        ang = pos[:, None] * self.inv_freq[None, :]
        cos, sin = ang.cos()[:, None, :], ang.sin()[:, None, :]
        x = self.emb[ids]
        kvs = []
        for li, L in enumerate(self.layers):
            h = self._rms(x, L["n1"]) @ L["qkv"].t()
            qq, k, v = h.split([q * D, kvh * D, kvh * D], -1)
            qq = self._rope(qq.view(S, q, D), cos, sin)
            k = self._rope(k.view(S, kvh, D), cos, sin)
            v = v.view(S, kvh, D)
            if keep_kv:
                kvs.append((k, v))
            if past:
                k = torch.cat([past[li][0], k], 0)
                v = torch.cat([past[li][1], v], 0)
            a = attention(qq, k, v)
            x = x + a.reshape(S, q * D) @ L["o"].t()
            gate, up = (self._rms(x, L["n2"]) @ L["gu"].t()).chunk(2, -1)
            x = x + (F.silu(gate) * up) @ L["down"].t()
        x = self._rms(x, self.norm)
        return x, x[-1] @ self.head.t(), kvs


PATHS = {}  # attention path -> how it ran (printed with the table)


def _sdpa(path, q, k, v, **kw):
    if PATHS.get(path, "sdpa enable_gqa") == "sdpa enable_gqa":
        try:
            out = F.scaled_dot_product_attention(q, k, v, enable_gqa=True, **kw)
            PATHS[path] = "sdpa enable_gqa"
            return out
        except (TypeError, RuntimeError) as err:
            PATHS[path] = f"sdpa, KV heads repeated (enable_gqa: {type(err).__name__})"
    rep = q.shape[1] // k.shape[1]
    return F.scaled_dot_product_attention(q, k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1), **kw)


def attention(q, k, v):
    """Causal attention of S queries over T >= S keys, the queries being the last S positions (lower-right causal).
    q (S, Hq, D), k/v (T, Hkv, D) -> (S, Hq, D)."""
    S, T = q.shape[0], k.shape[0]
    qt, kt, vt = q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None]
    if hasattr(F, "scaled_dot_product_attention"):
        if S == T:
            out = _sdpa("prefill: is_causal", qt, kt, vt, is_causal=True)
        else:
            try:
                from torch.nn.attention.bias import causal_lower_right
                mask, path = causal_lower_right(S, T), "suffix: causal_lower_right"
            except ImportError:
                mask, path = torch.ones(S, T, dtype=torch.bool, device=q.device).tril(T - S), "suffix: boolean mask"
            out = _sdpa(path, qt, kt, vt, attn_mask=mask)
        return out[0].transpose(0, 1)
    PATHS["all"] = "matmul + softmax (torch has no scaled_dot_product_attention)"
    rep = q.shape[1] // k.shape[1]
    kt, vt = kt.repeat_interleave(rep, 1), vt.repeat_interleave(rep, 1)
    s = (qt.float() @ kt.float().transpose(-1, -2)) / math.sqrt(q.shape[-1])
    s = s.masked_fill(torch.ones(S, T, dtype=torch.bool, device=q.device).triu(T - S + 1), float("-inf"))
    return (s.softmax(-1) @ vt.float()).to(q.dtype)[0].transpose(0, 1)


# ---- helpers -------------------------------------------------------------------------------------------------

def sync(dev):
    if dev == "cuda":
        torch.cuda.synchronize()


def timed(fn, dev, reps, warmup=1):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(reps):
        sync(dev)
        t0 = time.perf_counter()
        fn()
        sync(dev)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1e3


def make_connector(c, nb, dev, clients):
    L, H, D = c["layers"], c["kv_heads"], c["head_dim"]
    ktc = SimpleNamespace(kv_role="kv_both", kv_connector_extra_config={
        "endpoint": "ipc:///nonexistent", "load_timeout_ms": 120000, "save_timeout_ms": 120000, "model": "gpu-ttft"})
    mc = SimpleNamespace(model="gpu-ttft", dtype="bfloat16", use_mla=False, hf_config=SimpleNamespace(num_hidden_layers=L),
                         get_num_kv_heads=lambda pc: H, get_head_size=lambda: D)
    vc = SimpleNamespace(kv_transfer_config=ktc, model_config=mc, cache_config=SimpleNamespace(block_size=BS, cache_dtype="auto"),
                         parallel_config=SimpleNamespace(tensor_parallel_size=1, pipeline_parallel_size=1, rank=0))
    kcc = SimpleNamespace(num_blocks=nb, kv_cache_groups=[SimpleNamespace(layer_names=[], kv_cache_spec=SimpleNamespace(
        block_size=BS, num_kv_heads=H, head_size=D, dtype="bfloat16", use_mla=False))])
    conn = KvstashConnector(vc, KVConnectorRole.WORKER, kcc)
    conn._worker.clients = clients
    names = [f"model.layers.{i}.self_attn.attn" for i in range(L)]
    # vLLM >= 0.23 blocks_first layout, poisoned (not zeros) so unwritten blocks show
    kv = {n: torch.full((nb, 2, BS, H, D), -7.0, dtype=torch.bfloat16, device=dev) for n in names}
    conn.register_kv_caches(kv)
    if conn._worker.disabled is not None:
        raise SystemExit(f"connector disabled: {conn._worker.disabled}")
    return conn, names, kv


class LoadRig:
    """A connector worker with blocks_dev (n, L, 2, BS, H, D) in its (in-memory) store, ready to load them."""

    def __init__(self, c, blocks_dev, S, dev):
        n = blocks_dev.shape[0]
        self.dev, self.S, self.blocks_dev = dev, S, blocks_dev
        u8 = blocks_dev.cpu().view(n, -1).view(torch.uint8)
        self.clients = MemClients()
        self.nb = n + max(64, n // 4)
        self.conn, self.names, self.kv = make_connector(c, self.nb, dev, self.clients)
        ns = namespace_id(self.conn._worker.desc)
        self.keys = [int(i).to_bytes(4, "little") + S.to_bytes(4, "little") + bytes(24) for i in range(n)]
        if ARENA:
            self.clients.arena = arena_file(u8, self.keys, ns)
        else:
            for i, k in enumerate(self.keys):
                self.clients.store[(ns, k)] = u8[i].numpy().tobytes()
        del u8
        perm = torch.randperm(self.nb, generator=torch.Generator().manual_seed(7)).tolist()
        self.block_ids = perm[:n]  # scattered, as a paged allocator hands them out
        self.idx = torch.tensor(self.block_ids, device=dev)

    def load(self):
        """One step's load; returns (ms until layer 0 is in the cache, ms until every layer is)."""
        conn, dev = self.conn, self.dev
        md = KvstashConnectorMetadata(loads=[LoadSpec("req-0", self.keys, self.block_ids, is_async=False)])
        sync(dev)
        t0 = time.perf_counter()
        conn.bind_connector_metadata(md)
        conn.start_load_kv(None)
        for i, nm in enumerate(self.names):
            conn.wait_for_layer_load(nm)
            if i == 0:
                sync(dev)
                t1 = time.perf_counter()
        conn.wait_for_save()
        sync(dev)
        t2 = time.perf_counter()
        conn.clear_connector_metadata()
        errs = conn.get_block_ids_with_load_errors()
        if errs:
            raise SystemExit(f"S={self.S}: {len(errs)} blocks failed to load")
        return (t1 - t0) * 1e3, (t2 - t0) * 1e3

    def measure(self, reps):
        """Cold load, then the median of reps loads; the paged cache is then checked."""
        t_cold = self.load()[1]
        runs = [self.load() for _ in range(reps)]
        return dict(kvs=statistics.median(r[1] for r in runs), cold=t_cold, first=statistics.median(r[0] for r in runs),
                    bytes_ok=self.check())

    def check(self):
        """The paged cache holds the stored KV bit for bit; unrelated blocks are untouched."""
        kv, names, idx = self.kv, self.names, self.idx
        got = torch.stack([kv[nm].index_select(0, idx) for nm in names], 1)
        same = torch.equal(got.view(torch.int16), self.blocks_dev.view(torch.int16))
        mask = torch.ones(self.nb, dtype=torch.bool, device=self.dev)
        mask[idx] = False
        return same and all(bool((kv[nm][mask].float() == -7.0).all()) for nm in names)


def measure_load(c, blocks_dev, S, dev, reps):
    """Timings and checks of loading blocks_dev, plus the paged cache, layer names and block ids it went to."""
    rig = LoadRig(c, blocks_dev, S, dev)
    out = rig.measure(reps)
    rig.conn.shutdown()
    return out, rig.kv, rig.names, rig.idx


def h2d_ceiling(blocks_dev, dev, reps):
    """One torch host->device copy of the same bytes, from pinned and from pageable memory."""
    blocks_cpu = blocks_dev.cpu()
    gpu_dst = torch.empty_like(blocks_dev)
    pinned = blocks_cpu.pin_memory() if dev == "cuda" else blocks_cpu
    t_pin = timed(lambda: gpu_dst.copy_(pinned, non_blocking=True), dev, reps)
    t_page = timed(lambda: gpu_dst.copy_(blocks_cpu), dev, reps)
    return t_pin, t_page


def bench_length(model, c, S, frac, dev, reps, verbose):
    P = int(S * frac) // BS * BS
    n = P // BS
    gen = torch.Generator(device=dev).manual_seed(S)
    ids = torch.randint(0, c["vocab"], (S,), device=dev, generator=gen)

    def full():
        return model.forward(ids)

    t_prefill = timed(full, dev, reps)
    ref_hidden, _, kvs = model.forward(ids, keep_kv=True)
    # canonical stored blocks of the prefix: [block][layer][k,v][slot][kv head][dim]
    per_layer = [torch.stack([k[:P], v[:P]]).view(2, n, BS, c["kv_heads"], c["head_dim"]).transpose(0, 1) for k, v in kvs]
    blocks_dev = torch.stack(per_layer, 1).contiguous()  # (n, L, 2, BS, H, D)
    del per_layer, kvs
    nbytes = blocks_dev.numel() * blocks_dev.element_size()
    t_h2d_pin, t_h2d_page = h2d_ceiling(blocks_dev, dev, reps)
    ld, kv, names, idx = measure_load(c, blocks_dev, S, dev, reps)
    del blocks_dev

    # suffix prefill attending to the loaded prefix (read back from the paged cache as contiguous past KV)
    past = []
    for nm in names:
        g = kv[nm].index_select(0, idx)  # (n, 2, BS, H, D)
        past.append((g[:, 0].reshape(P, c["kv_heads"], c["head_dim"]), g[:, 1].reshape(P, c["kv_heads"], c["head_dim"])))
    sfx = ids[P:]
    t_suffix = timed(lambda: model.forward(sfx, past=past), dev, reps)  # noqa: F821 (pyflakes misreads the `del past` below)
    hid, _, _ = model.forward(sfx, past=past)
    ref = ref_hidden[P:].float()
    rel = float((hid.float() - ref).norm() / ref.norm())
    del past, kv
    if dev == "cuda":
        torch.cuda.empty_cache()

    cut = (t_prefill - (ld["kvs"] + t_suffix)) / t_prefill
    row = dict(S=S, P=P, n=n, gib=nbytes / 2 ** 30, prefill=t_prefill, suffix=t_suffix, kvs=ld["kvs"], cold=ld["cold"],
               first=ld["first"], pin=t_h2d_pin, page=t_h2d_page, cut=cut, rel=rel,
               # the byte check is the sharp one; on an H200 the suffix-vs-full hidden states differ by ~0.05 from
               # bf16 kernel differences alone (0 on CPU), so rel only catches gross errors (no past at all: ~1.3)
               ok=ld["bytes_ok"] and math.isfinite(rel) and rel < 0.1,
               tflops=flops(c, S) / (t_prefill / 1e3) / 1e12)
    if verbose:
        print(f"  S={S}: {row}", flush=True)
    return row


def random_blocks(c, S, frac, dev):
    n = int(S * frac) // BS
    shape = (n, c["layers"], 2, BS, c["kv_heads"], c["head_dim"])
    g = torch.Generator(device=dev).manual_seed(S)
    return torch.randint(-30000, 30000, shape, dtype=torch.int16, device=dev, generator=g).view(torch.bfloat16)


def loads_only(c, S, frac, dev, reps):
    """No model: random KV blocks, the load and its ceiling only (also runs against an older worker)."""
    blocks_dev = random_blocks(c, S, frac, dev)
    nbytes = blocks_dev.numel() * blocks_dev.element_size()
    t_pin, t_page = h2d_ceiling(blocks_dev, dev, reps)
    ld, kv, _names, _idx = measure_load(c, blocks_dev, S, dev, reps)
    del kv, blocks_dev
    if dev == "cuda":
        torch.cuda.empty_cache()
    return dict(S=S, P=int(S * frac) // BS * BS, gib=nbytes / 2 ** 30, pin=t_pin, page=t_page, ok=ld["bytes_ok"], **ld)


def flops(c, S):
    H, D, q, kv, f, L = c["hidden"], c["head_dim"], c["q_heads"], c["kv_heads"], c["ffn"], c["layers"]
    per_tok = 2 * L * (H * (q + 2 * kv) * D + q * D * H + 3 * H * f)
    attn = 2 * 2 * L * q * D * S * (S + 1) / 2  # QK^T and PV, causal
    return per_tok * S + attn


def run_lengths(fn, lengths, dev):
    rows = []
    for S in lengths:
        t0 = time.perf_counter()
        try:
            rows.append(fn(S))
        except (RuntimeError, MemoryError) as err:  # torch.cuda.OutOfMemoryError is a RuntimeError
            if "out of memory" not in str(err).lower():
                raise
            print(f"S={S}: out of memory ({str(err)[:120]}); dropped", flush=True)
            if dev == "cuda":
                torch.cuda.empty_cache()
            continue
        print(f"S={S} done in {time.perf_counter() - t0:.1f} s", flush=True)
    return rows


def print_loads(rows):
    print(f"{'tokens':>7} {'prefix':>7} {'MiB':>6} {'kvstash':>8} {'cold':>8} {'layer 0':>8} {'H2D pin':>8} {'H2D unp':>8} "
          f"{'kvs/pin':>7} {'GB/s':>6} ok")
    for r in rows:
        gbs = r["gib"] * 2 ** 30 / 1e9 / (r["kvs"] / 1e3)
        print(f"{r['S']:>7} {r['P']:>7} {r['gib'] * 1024:>6.1f} {r['kvs']:>8.1f} {r['cold']:>8.1f} {r['first']:>8.1f} "
              f"{r['pin']:>8.1f} {r['page']:>8.1f} {r['kvs'] / r['pin']:>7.1f} {gbs:>6.1f} {'yes' if r['ok'] else 'NO'}")


def print_ttft(rows):
    print(f"{'tokens':>7} {'prefix':>7} {'MiB':>6} {'prefill':>9} {'TFLOP/s':>7} {'suffix':>8} {'kvstash':>8} {'cold':>8} "
          f"{'layer 0':>8} {'H2D pin':>8} {'H2D unp':>8} {'kvs/pre':>7} {'kvs/pin':>7} {'GB/s':>6} {'TTFT cut':>8} {'rel err':>8} ok")
    for r in rows:
        gbs = r["gib"] * 2 ** 30 / 1e9 / (r["kvs"] / 1e3)
        print(f"{r['S']:>7} {r['P']:>7} {r['gib'] * 1024:>6.1f} {r['prefill']:>9.1f} {r['tflops']:>7.0f} {r['suffix']:>8.1f} "
              f"{r['kvs']:>8.1f} {r['cold']:>8.1f} {r['first']:>8.1f} {r['pin']:>8.1f} {r['page']:>8.1f} "
              f"{r['kvs'] / r['prefill']:>7.3f} {r['kvs'] / r['pin']:>7.1f} {gbs:>6.1f} {r['cut'] * 100:>7.1f}% {r['rel']:>8.1e} "
              f"{'yes' if r['ok'] else 'NO'}")
    print("times in ms (median); prefix = cached tokens (KV loaded), suffix = prefill of the rest attending to the loaded "
          "prefix; kvstash = connector worker load of the prefix (in-memory store, no ZeroMQ transfer); layer 0 = until "
          "layer 0 is in the paged cache; TTFT cut = (prefill - (kvstash + suffix)) / prefill")
    print("attention: " + "; ".join(f"{k} -> {v}" for k, v in sorted(PATHS.items())))


def ints(x):
    return [int(v) for v in x.split(",")]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true", help="2-layer toy model on CPU, 64/128-token prompts (smoke test)")
    ap.add_argument("--lengths", default=None, help="comma-separated prompt lengths (default 2048,4096,8192,16384,32768)")
    ap.add_argument("--cached", type=float, default=0.9, help="fraction of the prompt whose KV is cached (default 0.9)")
    ap.add_argument("--reps", type=int, default=None, help="timed repetitions per measurement (median)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--loads-only", action="store_true", help="no model: time the loads of random KV (any worker version)")
    ap.add_argument("--arena", action="store_true", help="blocks in a same-host arena file: the worker's in-place path")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args()
    c = TINY if a.tiny else LLAMA_8B
    dev = a.device or ("cpu" if a.tiny else "cuda")
    if dev == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device (use --tiny for the CPU smoke test)")
    lengths = ints(a.lengths or ("64,128" if a.tiny else "2048,4096,8192,16384,32768"))
    reps = a.reps or (2 if a.tiny else 3)
    name = torch.cuda.get_device_name() if dev == "cuda" else "cpu"
    worker = sys.modules["kvstash.vllm_worker"].__file__
    print(f"gpu-ttft: torch {torch.__version__}, device {dev} ({name}), model {'tiny' if a.tiny else 'Llama-3.1-8B shape'} "
          f"{c}, bf16, random weights, cached fraction {a.cached}; worker {worker}", flush=True)
    with torch.inference_mode():
        if a.loads_only:
            rows = run_lengths(lambda S: loads_only(c, S, a.cached, dev, reps), lengths, dev)
            print()
            print_loads(rows)
        else:
            t0 = time.perf_counter()
            model = Llama(c, dev, torch.bfloat16)
            print(f"model built in {time.perf_counter() - t0:.1f} s", flush=True)
            rows = run_lengths(lambda S: bench_length(model, c, S, a.cached, dev, reps, a.verbose), lengths, dev)
            del model
            print()
            print_ttft(rows)
    sys.exit(0 if rows and all(r["ok"] for r in rows) else 1)


if __name__ == "__main__":
    main()
