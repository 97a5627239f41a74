"""Drive kvstash.vllm_offload.KvstashSecondaryTier exactly as vLLM's TieringOffloadingManager drives a secondary
tier (vllm/v1/kv_offload/tiering/manager.py @ vllm-project/vllm 01bb462): JobMetadata(job_id, keys, block_ids
int64, is_promotion, req_context) into submit_store / submit_load, get_finished_jobs() polled once per engine
step, lookup(key, req_context) per block. The primary tier is a stand-in of vLLM's SharedOffloadRegion
(cpu/shared_offload_region.py @ 00a78d3): a file of num_blocks x row_stride bytes, mmapped, viewed as
(num_blocks, row_stride) through numpy as create_kv_memoryview does.

usage: vllm_offload_harness.py <endpoint> <mmap_path> <mode>
  mode store : fill rows 0..7, store them, zero them, look them up, load them into rows 16..23, compare bitwise
  mode reload: (a fresh process, after a sidecar restart) look the keys up and load them into rows 32..39
  mode down  : sidecar unreachable: lookups miss, store and load jobs fail, every call returns within bounds
prints one JSON object.
"""
import hashlib
import json
import mmap
import os
import sys
import time
from dataclasses import dataclass

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "adapters", "python"))
from kvstash.vllm_offload import KvstashSecondaryTier  # noqa: E402

NUM_BLOCKS, ROW_STRIDE, N = 64, 2 * 8192, 8  # two workers x 8 KiB cpu pages per row


@dataclass
class ReqContext:
    req_id: str
    kv_transfer_params: dict = None


@dataclass
class JobMetadata:
    job_id: int
    keys: list
    block_ids: np.ndarray
    is_promotion: bool
    req_context: ReqContext


def key(i):  # OffloadKey: block hash (32 bytes) + group index (4 bytes big-endian)
    return hashlib.sha256(b"block-%d" % i).digest() + (0).to_bytes(4, "big")


def row(i):
    seed = np.frombuffer(hashlib.sha256(b"row-%d" % i).digest(), dtype=np.uint8)
    return np.resize(seed, ROW_STRIDE) ^ np.arange(ROW_STRIDE, dtype=np.uint32).astype(np.uint8)


SEEN = {}


def wait_job(tier, job_id, limit_s=20.0):
    until = time.monotonic() + limit_s
    while time.monotonic() < until:
        for r in tier.get_finished_jobs():  # once per "engine step"
            SEEN[r.job_id] = r.success
        if job_id in SEEN:
            return SEEN.pop(job_id)
        time.sleep(0.002)
    raise SystemExit(f"job {job_id} did not finish within {limit_s}s")


def timed(fn):
    t0 = time.monotonic()
    v = fn()
    return v, (time.monotonic() - t0) * 1000


def main():
    endpoint, path, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.ftruncate(fd, NUM_BLOCKS * ROW_STRIDE)
    mm = mmap.mmap(fd, NUM_BLOCKS * ROW_STRIDE, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    arr = np.frombuffer(mm, dtype=np.int8).reshape(NUM_BLOCKS, ROW_STRIDE)
    view = memoryview(arr)
    tier = KvstashSecondaryTier(offloading_spec=None, primary_kv_view=view, tier_type="kvstash",
                                endpoint=endpoint, mmap_path=path, model="test/model", job_timeout_ms=20_000,
                                # a loaded CI machine: generous deadlines, except where the sidecar is down
                                lookup_timeout_ms=10.0 if mode == "down" else 2000.0,
                                connect_timeout_ms=200.0 if mode == "down" else 10_000.0)
    ctx = ReqContext("req-1")
    keys = [key(i) for i in range(N)]
    out = {}
    if mode == "store":
        for i in range(N):
            arr[i] = row(i).view(np.int8)
        tier.submit_store(JobMetadata(1, keys, np.arange(N, dtype=np.int64), False, ctx))
        out["store_ok"] = wait_job(tier, 1)
        arr[:N] = 0
        out["lookups"] = [tier.lookup(k, ctx) for k in keys]
        out["unknown_lookup"] = tier.lookup(key(999), ctx)
        target = np.arange(16, 16 + N, dtype=np.int64)
        tier.submit_load(JobMetadata(2, keys, target, True, ctx))
        out["load_ok"] = wait_job(tier, 2)
        out["bitwise"] = all(np.array_equal(arr[16 + i].view(np.uint8), row(i)) for i in range(N))
        # A load naming a key the sidecar does not hold fails as a whole.
        tier.submit_load(JobMetadata(3, [key(999)], np.array([40], dtype=np.int64), True, ctx))
        out["missing_load_ok"] = wait_job(tier, 3)
    elif mode == "reload":
        out["lookups"] = [tier.lookup(k, ctx) for k in keys]
        target = np.arange(32, 32 + N, dtype=np.int64)
        tier.submit_load(JobMetadata(7, keys, target, True, ctx))
        out["load_ok"] = wait_job(tier, 7)
        out["bitwise"] = all(np.array_equal(arr[32 + i].view(np.uint8), row(i)) for i in range(N))
    elif mode == "down":
        out["lookup"], out["lookup_ms"] = timed(lambda: tier.lookup(keys[0], ctx))
        out["lookup2"], out["lookup2_ms"] = timed(lambda: tier.lookup(keys[1], ctx))
        _, out["store_ms"] = timed(lambda: tier.submit_store(JobMetadata(5, keys, np.arange(N, dtype=np.int64), False, ctx)))
        _, out["load_ms"] = timed(lambda: tier.submit_load(JobMetadata(6, keys, np.arange(N, dtype=np.int64), True, ctx)))
        t0 = time.monotonic()
        out["store_ok"] = wait_job(tier, 5, 10.0)
        out["load_ok"] = wait_job(tier, 6, 10.0)
        out["jobs_failed_within_ms"] = (time.monotonic() - t0) * 1000
    out["stats"] = tier.stats
    out["last_error"] = tier.last_error
    tier.shutdown()
    print(json.dumps(out))


main()
