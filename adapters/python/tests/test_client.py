"""kvstash.client against a real sidecar (started by test/integration/vllm-connector.test.ts).

Usage: python3 test_client.py <endpoint>. Phase 1 runs the checks below and prints "READY <ns>"; the test
then restarts the sidecar without persisted namespaces and sends a line; phase 2 checks that the cached
namespace is re-registered (re-HELLO on KVS_NS_UNKNOWN) and prints "OK". Any failure exits non-zero.
"""
import os
import sys
import threading
import time

import zmq

from kvstash import errors as E
from kvstash.client import PUT_PRESENT, PUT_STORED, KvstashClient, ThreadLocalClients
from kvstash.errors import KvstashError
from kvstash.hashing import block_hashes

DESC = {"model": "py/client", "engine": "test", "layout": "raw", "tp_rank": 0, "tp_size": 1, "pp_rank": 0, "pp_size": 1, "tenant": "t"}


def expect_code(code, fn, within_s=None):
    t0 = time.monotonic()
    try:
        fn()
    except KvstashError as err:
        assert err.code == code, f"expected {code}, got {err.code}: {err}"
        if within_s is not None:
            assert time.monotonic() - t0 < within_s, f"{code} took {time.monotonic() - t0:.2f}s"
        return
    raise AssertionError(f"expected {code}, got no error")


def phase1(ep):
    c = KvstashClient(ep, timeout_ms=3000)
    ns = c.namespace(DESC)
    keys = block_hashes(list(range(1, 16 * 20 + 1)), 16)
    blocks = [os.urandom(100_000 + i) for i in range(len(keys))]
    assert c.put(ns, keys[:2], blocks[:2]) == [PUT_STORED] * 2
    assert c.put(ns, keys[:1], blocks[:1]) == [PUT_PRESENT]
    # batches of 3 blocks, 4 in flight: 7 pipelined requests
    assert c.put_many(ns, keys, blocks, max_batch_bytes=3 * 101_000, window=4)[2:] == [PUT_STORED] * 18
    got = c.get_many(ns, keys + [bytes(32)], max_batch_keys=3, window=4)
    assert [bytes(g) for g in got[:-1]] == blocks and got[-1] is None
    assert c.lookup(ns, keys).hit == 20
    ex = c.exists(ns, [keys[0], bytes(32), keys[1]])
    assert ex.exists == [True, False, True] and ex.prefix == 1
    assert c.delete(ns, keys[5:6]) == 1
    assert c.lookup(ns, keys).hit == 5
    single = c.get(ns, [keys[4], keys[5]])
    assert bytes(single[0]) == blocks[4] and single[1] is None
    # zero-copy sends of numpy arrays and memoryviews
    import numpy as np

    arr = np.frombuffer(os.urandom(4096), dtype=np.uint8)
    k2 = block_hashes(list(range(500, 532)), 16)
    c.put(ns, k2, [arr, memoryview(bytearray(arr.tobytes()))])
    assert all(bytes(x) == arr.tobytes() for x in c.get(ns, k2))
    # error codes from the sidecar
    expect_code(E.UNKNOWN_OP, lambda: c.request({"op": "NOPE"}))
    expect_code(E.NS_UNKNOWN, lambda: c.lookup("0" * 32, keys))
    expect_code(E.KEY_LENGTH, lambda: c.lookup(ns, b"short"))
    # a reply that comes after its deadline is dropped and does not confuse the next request
    expect_code(E.TIMEOUT, lambda: c.get(ns, keys, timeout_ms=0.001))
    assert c.lookup(ns, keys).hit == 5
    assert c.ping().startswith("kvstash/")
    assert isinstance(c.stats()["tiers"], list)
    # one client per thread
    errs = []
    t = threading.Thread(target=lambda: errs.append(_code(c.ping)))
    t.start()
    t.join()
    assert errs == [E.INTERNAL], errs
    pool = ThreadLocalClients(ep, timeout_ms=3000)
    hits = []

    def worker():
        cc = pool.get()
        hits.append(cc.lookup(cc.namespace(DESC), keys).hit)
        pool.close_current()

    ts = [threading.Thread(target=worker) for _ in range(4)]
    [x.start() for x in ts]
    [x.join() for x in ts]
    assert hits == [5] * 4, hits
    # a peer that never answers: KVS_TIMEOUT at the deadline; nobody listening: KVS_UNAVAILABLE
    ctx = zmq.Context.instance()
    silent = ctx.socket(zmq.ROUTER)
    silent.setsockopt(zmq.LINGER, 0)
    port = silent.bind_to_random_port("tcp://127.0.0.1")
    s = KvstashClient(f"tcp://127.0.0.1:{port}", timeout_ms=300)
    time.sleep(0.1)
    expect_code(E.TIMEOUT, s.ping, within_s=2.0)  # deadline 300 ms; slack for a loaded CI machine
    s.close()
    silent.close()
    absent = KvstashClient(f"ipc://{ep[6:]}.absent", timeout_ms=300)
    expect_code(E.UNAVAILABLE, absent.ping, within_s=2.0)
    absent.close()
    expect_code(E.UNAVAILABLE, absent.ping)  # closed
    return c, ns, keys


def _code(fn):
    try:
        fn()
    except KvstashError as err:
        return err.code
    return None


def main():
    ep = sys.argv[1]
    c, ns, keys = phase1(ep)
    print(f"READY {ns}", flush=True)
    sys.stdin.readline()
    # the sidecar restarted without its namespaces: the cached ns is re-registered transparently. A request
    # sent while ZeroMQ still held the old connection is lost and times out (documented): try again then.
    t0, timeouts = time.monotonic(), 0
    while True:
        try:
            r = c.lookup(ns, keys, timeout_ms=1000)
            break
        except KvstashError as err:
            assert err.code == E.TIMEOUT and time.monotonic() - t0 < 15, err
            timeouts += 1
    assert r.hit == 0, r
    print(f"timeouts after restart: {timeouts}", flush=True)
    assert c.put_many(ns, keys[:3], [b"a", b"b", b"c"], timeout_ms=5000) == [PUT_STORED] * 3
    print("OK", flush=True)


if __name__ == "__main__":
    main()
