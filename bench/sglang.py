#!/usr/bin/env python3
"""SGLang HiCache backend benchmark (issue 4): throughput of 128-page batch_set_v1 / batch_get_v1 /
batch_exists through kvstash.sglang.KvstashHiCacheStorage, against a raw pyzmq DEALER speaking wire
protocol v1 to the same sidecar in the same run (one PUT / one GET of 128 pre-gathered pages per batch: no
host-pool gather or scatter, no EXISTS before PUT, no per-page bookkeeping) — the ceiling for Python.

Starts its own sidecar: ``node dist/cli/kvstash.js serve`` (run ``npm run build`` first) on a temporary ipc
path, DRAM tier only. Host pool: the harness's torch emulation (test/integration/py/sglang_harness.py),
MHA page_first_direct, page size 64, 8 layers, 4 KV heads, head dim 64, bfloat16 → 512 KiB per page (K and V),
64 MiB per 128-page batch. ``--quick`` runs fewer batches.
"""
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import msgpack
import zmq

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "adapters", "python"))
sys.path.insert(0, os.path.join(REPO, "test", "integration", "py"))

from kvstash.sglang import KvstashHiCacheStorage  # noqa: E402
from sglang_harness import HostPool, StorageConfig, indices, page_keys  # noqa: E402

QUICK = "--quick" in sys.argv
BATCH = 128
ROUNDS = 3 if QUICK else 8
PS, LAYERS, HEADS, DIM = 64, 8, 4, 64


def start_sidecar(tmp):
    cli = os.path.join(REPO, "dist", "cli", "kvstash.js")
    if not os.path.exists(cli):
        sys.exit(f"{cli} is missing: run `npm run build` first")
    ep = f"ipc://{os.path.join(tmp, 'k.sock')}"
    p = subprocess.Popen(["node", cli, "serve", "--endpoints", ep, "--file-root", "", "--dram-bytes", "8GiB", "--log-level", "warn"],
                         cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         # other listeners of the CLI (control plane, metrics) on free ports; unknown variables are ignored
                         env={**os.environ, "KVSTASH_GRPC": "127.0.0.1:0", "KVSTASH_METRICS": "127.0.0.1:0"})
    out, t0 = "", time.monotonic()
    while "index rebuilt" not in out:
        line = p.stdout.readline()
        if not line or time.monotonic() - t0 > 30:
            p.kill()
            sys.exit(f"sidecar did not start:\n{out}{line}")
        out += line
    return p, ep


class Raw:
    """Hand-built wire protocol v1 over a plain DEALER: HELLO, PUT and GET of whole batches."""

    def __init__(self, ep, desc):
        self.s = zmq.Context.instance().socket(zmq.DEALER)
        self.s.setsockopt(zmq.LINGER, 0)
        self.s.connect(ep)
        self.id = 0
        self.ns = self.call({"op": "HELLO", "namespace": desc})[0]["ns"]

    def call(self, h, frames=()):
        self.id += 1
        self.s.send_multipart([msgpack.packb({**h, "v": 1, "id": self.id}), *frames], copy=False)
        reply = self.s.recv_multipart(copy=False)
        hdr = msgpack.unpackb(reply[0].bytes)
        assert hdr["status"] == "OK", hdr
        return hdr, reply[1:]

    def put(self, keys, blocks):
        return self.call({"op": "PUT", "ns": self.ns, "keys": b"".join(keys), "sizes": [len(b) for b in blocks]}, blocks)[0]

    def get(self, keys):
        return self.call({"op": "GET", "ns": self.ns, "keys": b"".join(keys)})[1]


def timed(fn):
    t0 = time.perf_counter()
    r = fn()
    return time.perf_counter() - t0, r


def main():
    tmp = tempfile.mkdtemp(prefix="kvstash-bench-sglang-")
    side, ep = start_sidecar(tmp)
    try:
        pages = BATCH * ROUNDS
        extra = {"endpoint": ep, "timeout_ms": 30000, "interface_v1": 1}
        writer = KvstashHiCacheStorage(StorageConfig(layout="page_first_direct", extra=extra), extra)
        src = HostPool("page_first_direct", pages, PS, LAYERS, HEADS, DIM, seed=1)
        writer.register_mem_pool_host(src)
        reader = KvstashHiCacheStorage(StorageConfig(layout="page_first_direct", extra=extra), extra)
        dst = HostPool("page_first_direct", pages, PS, LAYERS, HEADS, DIM)
        reader.register_mem_pool_host(dst)
        page_bytes = src.get_data_page(0).numel() * 2
        batch_bytes = BATCH * page_bytes
        keys = page_keys(pages, PS, 3)
        set_t, get_t, ex_t = [], [], []
        for r in range(ROUNDS):
            ks = keys[r * BATCH:(r + 1) * BATCH]
            idx = indices(list(range(r * BATCH, (r + 1) * BATCH)), PS)
            dt, ok = timed(lambda: writer.batch_set_v1(ks, idx))
            assert all(ok), writer.get_stats()
            set_t.append(dt)
            dt, n = timed(lambda: reader.batch_exists(ks))
            assert n == BATCH
            ex_t.append(dt)
            dt, ok = timed(lambda: reader.batch_get_v1(ks, idx))
            assert all(ok), reader.get_stats()
            get_t.append(dt)
        import torch

        assert torch.equal(src.kv_buffer.view(torch.int16), dst.kv_buffer.view(torch.int16)), "round trip differs"

        # raw ceiling: same sizes, pre-gathered page bytes, distinct keys, same sidecar
        raw = Raw(ep, {**writer.descriptor(), "layout": writer.fingerprint + ";raw"})
        blocks = [bytes(src.get_data_page(i * PS).view(torch.int16).numpy().tobytes()) for i in range(BATCH)]
        rkeys = [bytes.fromhex(k) for k in page_keys(pages, PS, 4)]
        rset, rget = [], []
        for r in range(ROUNDS):
            ks = rkeys[r * BATCH:(r + 1) * BATCH]
            dt, res = timed(lambda: raw.put(ks, blocks))
            assert res["results"] == [0] * BATCH
            rset.append(dt)
            dt, frames = timed(lambda: raw.get(ks))
            assert len(frames) == BATCH and all(len(f) == page_bytes for f in frames)
            rget.append(dt)

        med = statistics.median
        gb = lambda ts: batch_bytes / med(ts) / 1e9  # noqa: E731
        rows = [
            ("batch_set_v1 (128 pages)", med(set_t) * 1e3, gb(set_t), med(rset) * 1e3, gb(rset)),
            ("batch_get_v1 (128 pages)", med(get_t) * 1e3, gb(get_t), med(rget) * 1e3, gb(rget)),
        ]
        print(f"SGLang HiCache backend vs raw pyzmq DEALER, same sidecar, same run: {BATCH} pages x {page_bytes // 1024} KiB "
              f"= {batch_bytes >> 20} MiB per batch, {ROUNDS} batches, median{' (quick)' if QUICK else ''}")
        print(f"{'op':<26} {'backend ms':>10} {'backend GB/s':>12} {'raw ms':>8} {'raw GB/s':>9} {'backend/raw':>11}")
        for name, bms, bg, rms, rg in rows:
            print(f"{name:<26} {bms:>10.1f} {bg:>12.2f} {rms:>8.1f} {rg:>9.2f} {bg / rg:>11.2f}")
        print(f"batch_exists (128 keys, one round trip): median {med(ex_t) * 1e3:.2f} ms")
        writer.close()
        reader.close()
    finally:
        side.terminate()
        try:
            side.wait(10)
        except subprocess.TimeoutExpired:
            side.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
