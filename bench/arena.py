#!/usr/bin/env python3
"""Benchmark: the same-host arena data path (issue 13), every figure a ratio to a ceiling measured in this run.

Blocks: Llama-3.1-8B shape, 16 tokens x 32 layers x 8 KV heads x 128 x (K,V) x bf16 = 2 MiB per block.
1. Load into a paged CPU KV cache in vLLM's layout (v0.23+ ``(blocks, 2, 16, 8, 128)`` per layer), through the
   vLLM connector's worker (start_load_kv + wait_for_layer_load x 32), arena vs inline frames, against a plain
   memcpy (torch ``copy_``) of the same bytes between two contiguous buffers.
2. Save from that cache (save_kv_layer x 32 + wait_for_save + the background store), arena vs inline.
3. Python fetch of values of 256 KiB, 2 MiB, 4 MiB: ``KvstashClient.get_many`` (arena) against redis-py (hiredis)
   on a local redis-server started here, best of GET loop / pipeline / MGET; same process, same run; and
   ``get_many(into=...)`` into a reused buffer, with the cost of fresh memory measured alongside.
Starts its own sidecar (DRAM tier only, ipc) and redis-server (unix socket). ``--quick`` runs less.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "adapters", "python"))
sys.path.insert(0, os.path.join(REPO, "bench"))

import torch  # noqa: E402

from bench_common import paged_worker, save_then_load, start_sidecar, table  # noqa: E402
from kvstash.client import KvstashClient  # noqa: E402

QUICK = "--quick" in sys.argv
ROUNDS = 4
LAYERS, HEADS, DIM, BS = 32, 8, 128, 16
BLOCK = 2 * BS * HEADS * DIM * 2 * LAYERS
N = 64 if QUICK else 256  # 128 MiB / 512 MiB per round


def best(f, rounds=ROUNDS) -> float:
    return min(f() for _ in range(rounds))  # the first round maps fresh pages; the best is the steady state


def memcpy_s(nbytes: int) -> float:
    a = torch.empty(nbytes, dtype=torch.uint8).fill_(1)
    b = torch.empty(nbytes, dtype=torch.uint8).fill_(2)

    def run():
        t0 = time.perf_counter()
        b.copy_(a)
        return time.perf_counter() - t0
    return best(run)


def fresh_s(nbytes: int) -> float:
    """Seconds to allocate and first-touch ``nbytes`` in 256 KiB pieces (the page-fault cost of new values)."""
    def run():
        t0 = time.perf_counter()
        bufs = [bytearray(256 << 10) for _ in range(max(1, nbytes >> 18))]
        dt = time.perf_counter() - t0
        del bufs
        return dt
    return best(run, 3)


def connector_paths(ep: str, shm: bool) -> tuple:
    os.environ["KVSTASH_SHM"] = "1" if shm else "0"
    nb = 2 * N
    w, names, kv = paged_worker(ep, nb, LAYERS, HEADS, DIM, BS)
    cl = KvstashClient(ep, timeout_ms=60000)
    ns = cl.namespace(w._worker.desc)
    saves, loads = [], []
    for _ in range(ROUNDS):
        keys = [os.urandom(32) for _ in range(N)]
        s, g = save_then_load(w, names, kv, keys, list(range(0, nb, 2)), list(range(1, nb, 2)), 16)
        saves.append(s)
        loads.append(g)
        cl.delete(ns, keys)  # steady state: the next round reuses these slots (pages already mapped on both sides)
    c = w._worker.counters
    assert c["saved_blocks"] + c["present_blocks"] == ROUNDS * N, c
    w.shutdown()
    cl.close()
    os.environ.pop("KVSTASH_SHM", None)
    return min(saves), min(loads)


def redis_vs_kvstash(ep: str, tmp: str) -> list:
    import redis

    sock = os.path.join(tmp, "redis.sock")
    rp = subprocess.Popen(["redis-server", "--port", "0", "--unixsocket", sock, "--save", "", "--appendonly", "no",
                           "--maxmemory", "0", "--proto-max-bulk-len", "1gb"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        r = redis.Redis(unix_socket_path=sock)
        until = time.time() + 20
        while True:
            try:
                r.ping()
                break
            except redis.exceptions.ConnectionError:
                if time.time() > until:
                    raise
                time.sleep(0.05)
        c = KvstashClient(ep, timeout_ms=60000)
        ns = c.namespace({"model": "bench", "engine": "bench", "layout": "redis", "tp_rank": 0, "tp_size": 1, "pp_rank": 0, "pp_size": 1, "tenant": "default"})
        assert c.arena_of(ns) is not None, "the bench client must be on the sidecar's host"
        rows = []
        total = (32 if QUICK else 128) << 20
        for size in (256 << 10, 2 << 20, 4 << 20):
            n = total // size
            keys = [os.urandom(32) for _ in range(n)]
            vals = [os.urandom(size) for _ in range(n)]
            c.put_many(ns, keys, vals)
            r.mset({k: v for k, v in zip(keys, vals)})

            def timed(f):
                def run():
                    t0 = time.perf_counter()
                    got = f()
                    dt = time.perf_counter() - t0
                    assert len(got) == n and all(g is not None and len(g) == size for g in got)
                    return dt
                return run

            def pipe():
                p = r.pipeline(transaction=False)
                for k in keys:
                    p.get(k)
                return p.execute()
            red = {"GET loop": best(timed(lambda: [r.get(k) for k in keys])), "pipeline": best(timed(pipe)),
                   "MGET": best(timed(lambda: r.mget(keys)))}
            pool = memoryview(bytearray(n * size))  # a host pool the caller reuses, as engines do (SGLang, LMCache)
            pool[:] = b"\1" * len(pool)
            into = [pool[i * size:(i + 1) * size] for i in range(n)]
            kvs = {"get_many": best(timed(lambda: c.get_many(ns, keys))), "get loop": best(timed(lambda: [c.get(ns, [k])[0] for k in keys]))}
            kvi = best(timed(lambda: c.get_many(ns, keys, into=into)))
            assert bytes(into[n - 1]) == vals[n - 1]
            rb, kb = min(red, key=red.get), min(kvs, key=kvs.get)
            gbs = lambda s: n * size / s / 1e9  # noqa: E731
            rows.append([f"{size >> 10} KiB", f"{gbs(red[rb]):.2f} ({rb})", f"{gbs(kvs[kb]):.2f} ({kb})", f"{red[rb] / kvs[kb]:.2f}",
                         f"{gbs(kvi):.2f}", f"{red[rb] / kvi:.2f}", f"{gbs(fresh_s(n * size)):.2f}"])
            c.delete(ns, keys)
            r.flushall()
        c.close()
        return rows
    finally:
        rp.terminate()
        rp.wait(timeout=10)


def main() -> None:
    if not shutil.which("redis-server"):
        raise SystemExit("bench arena needs redis-server (apt-get install redis-server python3-redis python3-hiredis)")
    tmp = tempfile.mkdtemp(prefix="kvstash-bench-arena-")
    proc, ep = start_sidecar(tmp, ("--dram-bytes", "6GiB"))
    try:
        mc = memcpy_s(N * BLOCK)
        gbs = lambda s: N * BLOCK / s / 1e9  # noqa: E731
        a_save, a_load = connector_paths(ep, True)
        i_save, i_load = connector_paths(ep, False)
        print(f"vLLM connector on CPU tensors, {N} blocks of {BLOCK >> 20} MiB (8B shape), best of {ROUNDS}; memcpy = torch copy_ of the same bytes: {gbs(mc):.2f} GB/s")
        print(table(["path", "arena GB/s", "arena / memcpy", "inline GB/s", "inline / memcpy", "arena / inline"], [
            ["load (GET → paged KV)", f"{gbs(a_load):.2f}", f"{mc / a_load:.2f}", f"{gbs(i_load):.2f}", f"{mc / i_load:.2f}", f"{i_load / a_load:.2f}"],
            ["save (paged KV → store)", f"{gbs(a_save):.2f}", f"{mc / a_save:.2f}", f"{gbs(i_save):.2f}", f"{mc / i_save:.2f}", f"{i_save / a_save:.2f}"],
        ]))
        rows = redis_vs_kvstash(ep, tmp)
        print("\nPython fetch, GB/s: kvstash (arena) vs redis-py + hiredis on a local redis-server (unix socket), best method each, best of 3;")
        print("'into' = get_many(into=...) copying into a reused host buffer (redis-py has no such call: each value is a new bytes);")
        print("'fresh memory' = allocating and touching as many new bytes, what every new value costs both sides on this machine")
        print(table(["value", "redis", "kvstash", "kvstash / redis", "kvstash into", "into / redis", "fresh memory"], rows))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
