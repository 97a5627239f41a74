"""kvstash.arena against real sidecars (driven by test/integration/arena-python.test.ts).

Usage: python3 test_arena.py <mode> <endpoint> [<short-lease endpoint>]. Modes:
- ``client``: attach, bitwise round trips through lease GETs and ALLOC/COMMIT, inline when shm is off, a slot
  reused after its lease expired is detected (never served), the load policy and run grouping; prints "OK".
- ``inline``: run as another user: the arena file cannot be opened, so the client stays on inline frames; "OK".
- ``die``: ALLOC slots, print "ALLOCATED", then kill -9 itself before committing (the sidecar must reclaim them).
- ``restart``: put/get through the arena, print "READY", wait for a line (the sidecar is restarted meanwhile),
  then check the client re-attached to the new arena and round-trips again; "OK".
"""
import os
import signal
import sys
import time
import unittest
from types import SimpleNamespace

from kvstash.arena_io import runs
from kvstash.client import PUT_PRESENT, PUT_STORED, KvstashClient
from kvstash.hashing import block_hashes
from kvstash.load_policy import PrefillRate, worth_loading
from kvstash.errors import KvstashError

DESC = {"model": "py/arena", "engine": "test", "layout": "raw", "tp_rank": 0, "tp_size": 1, "pp_rank": 0, "pp_size": 1, "tenant": "t"}


def wait_until(cond, what, timeout_s=20.0):
    until = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > until:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class ArenaClient(unittest.TestCase):
    ep = short = ""

    def test_roundtrip_in_place(self):
        c = KvstashClient(self.ep, timeout_ms=5000)
        ns = c.namespace(DESC)
        self.assertIsNotNone(c.arena_of(ns), "same host: attached automatically")
        keys = block_hashes(list(range(1, 16 * 40 + 1)), 16)
        blocks = [os.urandom(200_000 + 4096 * (i % 3)) for i in range(len(keys))]
        self.assertEqual(c.put_many(ns, keys, blocks), [PUT_STORED] * len(keys))
        got = c.get_many(ns, keys + [os.urandom(32)], max_batch_keys=16)
        self.assertEqual([bytes(g) for g in got[:-1]], blocks)
        self.assertIsNone(got[-1])
        pool = memoryview(bytearray(len(keys) * 210_000))
        into = [pool[i * 210_000:(i + 1) * 210_000] for i in range(len(keys))]
        into[3] = memoryview(bytearray(1000))  # too small: a miss, nothing written past it
        got = c.get_many(ns, keys, max_batch_keys=16, into=into)
        self.assertEqual([bytes(g) if g is not None else None for g in got], blocks[:3] + [None] + blocks[4:])
        self.assertEqual(bytes(into[5][:len(blocks[5])]), blocks[5], "copied into the caller's buffer")
        self.assertEqual(bytes(into[3]), bytes(1000))
        with self.assertRaises(KvstashError):
            c.get_many(ns, keys, into=into[:-1])
        lg = c.lease_get(ns, keys[:4])
        self.assertEqual(len(lg.inline) - lg.inline.count(None), 0, "no bytes on the socket")
        self.assertTrue(all(lg.valid(i) for i in range(4)))
        self.assertEqual(bytes(lg.view(2)), blocks[2])
        lg.release()
        st = c.stats()
        self.assertGreaterEqual(st["arena"]["attached_clients"], 1)
        self.assertGreaterEqual(st["arena"]["leases"], 1)
        c.close()

    def test_alloc_commit(self):
        c = KvstashClient(self.ep, timeout_ms=5000)
        ns = c.namespace(DESC)
        keys = [os.urandom(32) for _ in range(5)]
        blocks = [os.urandom(1 << 20) for _ in range(5)]
        self.assertEqual(c.put(ns, keys[:1], blocks[:1]), [PUT_STORED])
        al = c.alloc(ns, keys, [len(b) for b in blocks])
        self.assertEqual(al.present, [True, False, False, False, False])
        self.assertIsNone(al.slots[0])
        starts = [s[0] for s in al.slots[1:]]
        self.assertEqual(len(runs(al.slots[1:], 4)), 1, f"one request's slots are one strided run: {starts}")
        for i in range(1, 4):
            al.view(i)[:] = blocks[i]
        self.assertEqual(al.commit([False, True, True, True, False]), [PUT_PRESENT, PUT_STORED, PUT_STORED, PUT_STORED, 2])
        got = c.get(ns, keys)
        self.assertEqual([bytes(g) if g is not None else None for g in got], blocks[:4] + [None])
        c.close()

    def test_inline_when_shm_off(self):
        c = KvstashClient(self.ep, timeout_ms=5000, shm=False)
        ns = c.namespace(DESC)
        self.assertIsNone(c.arena_of(ns))
        self.assertIsNone(c.lease_get(ns, [os.urandom(32)]))
        k, v = os.urandom(32), os.urandom(70_000)
        c.put(ns, [k], [v])
        self.assertEqual(bytes(c.get(ns, [k])[0]), v)
        buf = bytearray(80_000)
        self.assertEqual(bytes(c.get_many(ns, [k], into=[buf])[0]), v)
        self.assertEqual(bytes(buf[:70_000]), v)
        c.close()

    def test_reused_slot_is_a_miss(self):
        c = KvstashClient(self.short, timeout_ms=5000)
        ns = c.namespace(DESC)
        k, v = os.urandom(32), os.urandom(300_000)
        c.put(ns, [k], [v])
        lg = c.lease_get(ns, [k])
        self.assertTrue(lg.valid(0))
        expired = c.stats()["arena"]["lease_expired"]
        wait_until(lambda: c.stats()["arena"]["lease_expired"] > expired, "the lease to expire")
        c.delete(ns, [k])
        others = [os.urandom(32) for _ in range(8)]
        c.put(ns, others, [os.urandom(300_000) for _ in others])  # one of them takes the freed slot
        self.assertEqual(bytes(lg.view(0))[:16] == v[:16] and lg.valid(0), False, "a reused slot never checks out")
        self.assertFalse(lg.valid(0))
        c.close()

    def test_load_policy(self):
        rate = PrefillRate(0)
        rate.observe(8192, now=10.0)
        rate.observe(100, now=10.25)  # the 8k-token step took 250 ms
        self.assertAlmostEqual(rate.tokens_per_s(), 8192 / 0.25)
        r = SimpleNamespace(hit=100, tiers={"dram": 40, "file": 40, "s3": 20},
                            load_ms={"dram": 4.0, "file": 40.0, "s3": 400.0}, depth={"dram": 40, "file": 90, "s3": 100})
        # recompute 16 tokens at 32k tok/s = 0.5 ms a block; dram 0.1, file 1.0, s3 20 ms a block
        self.assertEqual(worth_loading(r, ["dram", "file", "s3"], 16, 1 << 20, 32_000), 40)
        self.assertEqual(worth_loading(r, ["dram", "file", "s3"], 64, 1 << 20, 32_000), 90, "2 ms a block to recompute: file is worth it")
        self.assertEqual(worth_loading(r, ["dram", "file", "s3"], 16, 1 << 20, 0), 100, "no rate known: nothing cut")
        self.assertEqual(worth_loading(r, ["dram", "file", "s3"], 16, 1 << 20, 32_000, hop_bytes_per_s=1e9), 0, "over a 1 GB/s socket even DRAM loses")
        self.assertEqual(runs([(0, 1), (10, 1), (20, 1), (40, 1), (50, 1)], 5), [(0, 3, 10), (3, 2, 10)])


def main():
    mode, ep = sys.argv[1], sys.argv[2]
    if mode == "client":
        ArenaClient.ep, ArenaClient.short = ep, sys.argv[3]
        res = unittest.main(argv=["test_arena"], exit=False, verbosity=1).result
        print("OK" if res.wasSuccessful() else "FAILED", flush=True)
        sys.exit(0 if res.wasSuccessful() else 1)
    c = KvstashClient(ep, timeout_ms=5000)
    ns = c.namespace(DESC)
    if mode == "inline":
        assert c.arena_of(ns) is None, "another user must not map the arena"
        k, v = os.urandom(32), os.urandom(50_000)
        assert c.put(ns, [k], [v]) == [PUT_STORED]
        assert bytes(c.get(ns, [k])[0]) == v
    elif mode == "die":
        al = c.alloc(ns, [os.urandom(32) for _ in range(3)], [1 << 20] * 3)
        assert al is not None and all(s is not None for s in al.slots)
        print("ALLOCATED", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    elif mode == "restart":
        first = c.arena_of(ns).path
        k, v = os.urandom(32), os.urandom(100_000)
        c.put(ns, [k], [v])
        assert bytes(c.get(ns, [k])[0]) == v
        print("READY", flush=True)
        sys.stdin.readline()
        k2, v2 = os.urandom(32), os.urandom(100_000)
        wait_until(lambda: c.put(ns, [k2], [v2]) == [PUT_STORED], "the restarted sidecar")
        wait_until(lambda: c.get(ns, [k2])[0] is not None and c.arena_of(ns) is not None and c.arena_of(ns).path != first, "re-attach")
        assert bytes(c.get(ns, [k2])[0]) == v2
        assert c.lease_get(ns, [k2]).slots[0] is not None
    print("OK", flush=True)


if __name__ == "__main__":
    main()
