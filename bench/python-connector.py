#!/usr/bin/env python3
"""Benchmark: the Python side of kvstash against a real sidecar, with raw pyzmq as the ceiling.

Blocks are realistic: 16 tokens x 32 layers x 8 KV heads x 128 head dim x (K,V) x bf16 = 2 MiB (Llama-3.1-8B).
Rows, each the best of 3 rounds (fresh keys per round, deleted afterwards):
  raw zmq     a bare DEALER: msgpack header + block frames, same batching (8 blocks per request) and window (4)
  client      KvstashClient.put_many / get_many (the path the connectors use)
  connector   the vLLM connector's worker: save = save_kv_layer x 32 + wait_for_save + the background PUTs
              (gather from a paged CPU KV cache); load = start_load_kv + wait_for_layer_load x 32 (GET + scatter)
and the scheduler's lookup latency (get_num_new_matched_tokens on a 2048-token prompt, fully stored: hashing
+ LOOKUP) against a raw LOOKUP of the same keys.

It starts its own sidecar: node dist/cli/kvstash.js serve (``npm run bench`` builds dist first; without
dist it falls back to tsx). ``--quick`` runs fewer blocks and calls.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from types import SimpleNamespace

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "adapters", "python"))

import msgpack  # noqa: E402
import zmq  # noqa: E402

from bench_common import paged_worker, pct, save_then_load, start_sidecar, table, vllm_configs  # noqa: E402
from kvstash.client import KvstashClient  # noqa: E402
from kvstash.hashing import block_hashes  # noqa: E402

QUICK = "--quick" in sys.argv
LAYERS, HEADS, DIM, BS = 32, 8, 128, 16
BLOCK = 2 * BS * HEADS * DIM * 2 * LAYERS  # 2 MiB
N = 32 if QUICK else 128
BATCH, WINDOW = 8, 4
LOOKUPS = 100 if QUICK else 500


def raw_roundtrip(ep: str, ns: str, keys: list, blocks: list) -> tuple:
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(ep)
    batches = [(a, min(len(keys), a + BATCH)) for a in range(0, len(keys), BATCH)]

    def run(make):
        t0, i, inflight, got = time.perf_counter(), 0, 0, []
        while i < len(batches) or inflight:
            while i < len(batches) and inflight < WINDOW:
                s.send_multipart(make(i, *batches[i]), copy=False)
                i, inflight = i + 1, inflight + 1
            got.append(s.recv_multipart(copy=False))
            inflight -= 1
        return time.perf_counter() - t0, got

    hdr = lambda i, op, a, b, **kw: msgpack.packb({"v": 1, "id": i + 1, "op": op, "ns": ns, "keys": b"".join(keys[a:b]), **kw})  # noqa: E731
    put_s, _ = run(lambda i, a, b: [hdr(i, "PUT", a, b, sizes=[BLOCK] * (b - a)), *blocks[a:b]])
    get_s, replies = run(lambda i, a, b: [hdr(i, "GET", a, b)])
    assert sum(len(r) - 1 for r in replies) == len(keys), "raw GET missed blocks"
    s.close()
    return put_s, get_s


def raw_lookup_latency(ep: str, ns: str, keys: list) -> list:
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(ep)
    kb, out = b"".join(keys), []
    for i in range(LOOKUPS):
        t0 = time.perf_counter()
        s.send(msgpack.packb({"v": 1, "id": i + 1, "op": "LOOKUP", "ns": ns, "keys": kb}))
        r = msgpack.unpackb(s.recv(), raw=False)
        out.append(time.perf_counter() - t0)
        assert r["hit"] == len(keys)
    s.close()
    return out


def configs(ep: str, num_blocks: int):
    return vllm_configs(ep, num_blocks, LAYERS, HEADS, DIM, BS)


def connector_roundtrip(ep: str, keys: list) -> tuple:
    nb = 2 * len(keys)
    w, names, kv = paged_worker(ep, nb, LAYERS, HEADS, DIM, BS)
    save_s, load_s = save_then_load(w, names, kv, keys, list(range(0, nb, 2)), list(range(1, nb, 2)), BATCH)
    assert w._worker.counters["saved_blocks"] == len(keys), w._worker.counters
    w.shutdown()
    return save_s, load_s


def lookup_latency(ep: str) -> tuple:
    from kvstash.vllm import KvstashConnector
    from kvstash.vllm_compat import KVConnectorRole

    vc, kcc = configs(ep, 16)
    s = KvstashConnector(vc, KVConnectorRole.SCHEDULER, kcc)
    tokens = list(range(1000, 1000 + 2048 + 1))
    keys = block_hashes(tokens, BS)[:128]
    c = KvstashClient(ep)
    ns = c.namespace(s._scheduler.namespaces[0])
    c.put_many(ns, keys, [b"x"] * len(keys))
    lat, hashing = [], []
    for i in range(LOOKUPS):
        req = SimpleNamespace(request_id=f"bench-{i}", all_token_ids=tokens, prompt_token_ids=tokens, lora_request=None, cache_salt=None)
        t0 = time.perf_counter()
        n, _ = s.get_num_new_matched_tokens(req, 0)
        lat.append(time.perf_counter() - t0)
        assert n == 2048, n
        s.request_finished(req, [])
        t0 = time.perf_counter()
        block_hashes(tokens, BS, max_blocks=128)
        hashing.append(time.perf_counter() - t0)
    raw = raw_lookup_latency(ep, ns, keys)
    c.close()
    s.shutdown()
    return lat, hashing, raw


def main() -> None:
    tmp = tempfile.mkdtemp(prefix="kvstash-bench-")
    proc, ep = start_sidecar(tmp)
    try:
        c = KvstashClient(ep, timeout_ms=60000)
        ns = c.namespace({"model": "bench", "engine": "bench", "layout": "2MiB", "tp_rank": 0, "tp_size": 1, "pp_rank": 0, "pp_size": 1, "tenant": "default"})
        blocks = [os.urandom(BLOCK) for _ in range(N)]
        best = {k: float("inf") for k in ("raw_put", "raw_get", "cl_put", "cl_get", "co_put", "co_get")}
        def raw_path():
            keys = [os.urandom(32) for _ in range(N)]
            p, g = raw_roundtrip(ep, ns, keys, blocks)
            best["raw_put"], best["raw_get"] = min(best["raw_put"], p), min(best["raw_get"], g)
            c.delete(ns, keys)

        def client_path():
            keys = [os.urandom(32) for _ in range(N)]
            t0 = time.perf_counter()
            res = c.put_many(ns, keys, blocks, max_batch_bytes=BATCH * BLOCK, window=WINDOW)
            best["cl_put"] = min(best["cl_put"], time.perf_counter() - t0)
            assert res.count(0) == N, res
            t0 = time.perf_counter()
            got = c.get_many(ns, keys, max_batch_keys=BATCH, window=WINDOW)
            best["cl_get"] = min(best["cl_get"], time.perf_counter() - t0)
            assert all(g is not None and len(g) == BLOCK for g in got)
            del got
            c.delete(ns, keys)

        def connector_path():
            keys = [os.urandom(32) for _ in range(N)]
            p, g = connector_roundtrip(ep, keys)
            best["co_put"], best["co_get"] = min(best["co_put"], p), min(best["co_get"], g)
            c.delete(c.namespace(configs_desc(ep)), keys)

        paths = [raw_path, client_path, connector_path]
        for rnd in range(3):  # rotate the order so no path always runs first (after the others' deletes)
            for f in paths[rnd:] + paths[:rnd]:
                f()
        gbs = lambda s: N * BLOCK / s / 1e9  # noqa: E731
        rows = []
        for op, raw, cl, co in (("save (PUT)", "raw_put", "cl_put", "co_put"), ("load (GET)", "raw_get", "cl_get", "co_get")):
            r = gbs(best[raw])
            rows.append([op, f"{r:.2f}", f"{gbs(best[cl]):.2f}", f"{gbs(best[cl]) / r:.2f}", f"{gbs(best[co]):.2f}", f"{gbs(best[co]) / r:.2f}"])
        print(f"Throughput, GB/s: {N} blocks of {BLOCK >> 20} MiB (16 tok x 32 layers x 8 heads x 128 x K,V x bf16), "
              f"{BATCH} blocks/request, window {WINDOW}, best of 3, DRAM tier, ipc")
        print(table(["op", "raw zmq", "client", "client/raw", "connector", "connector/raw"], rows))
        lat, hashing, raw = lookup_latency(ep)
        ms = lambda x: f"{x * 1e3:.3f}"  # noqa: E731
        print(f"\nScheduler lookup latency, ms: 2048-token prompt (128 blocks, all stored), {LOOKUPS} calls")
        print(table(["path", "p50", "p99", "p50 / raw p50"], [
            ["raw LOOKUP (precomputed keys)", ms(pct(raw, 50)), ms(pct(raw, 99)), "1.00"],
            ["kvstash block hash of 128 blocks", ms(pct(hashing, 50)), ms(pct(hashing, 99)), f"{pct(hashing, 50) / pct(raw, 50):.2f}"],
            ["get_num_new_matched_tokens", ms(pct(lat, 50)), ms(pct(lat, 99)), f"{pct(lat, 50) / pct(raw, 50):.2f}"],
        ]))
        c.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def configs_desc(ep: str) -> dict:
    from kvstash.vllm import namespace_descriptor
    from kvstash.vllm_settings import ConnectorSettings, layout_spec

    vc, kcc = configs(ep, 16)
    return namespace_descriptor(ConnectorSettings.from_extra({"endpoint": ep}), vc, layout_spec(vc, kcc), 0, 1, 0, 1)


if __name__ == "__main__":
    main()
