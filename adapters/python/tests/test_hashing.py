"""kvstash.hashing against protocol/vectors/block-hash.json (generated from the TypeScript implementation).

Run: PYTHONPATH=adapters/python python3 adapters/python/tests/test_hashing.py  (from the repo root; the
ava test test/python-hash.test.ts does this). Exits non-zero on any mismatch.
"""
import json
import os
import sys
import unittest

from kvstash.hashing import MultimodalItem, ZERO_HASH, block_hash, block_hashes, namespace_id

VECTORS = os.path.join(os.path.dirname(__file__), "..", "..", "..", "protocol", "vectors", "block-hash.json")


class HashVectors(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with open(VECTORS, encoding="utf-8") as f:
            cls.v = json.load(f)

    def test_zero_hash(self):
        self.assertEqual(ZERO_HASH.hex(), self.v["zero_hash"])

    def test_single_blocks(self):
        for c in self.v["single"]:
            got = block_hash(bytes.fromhex(c["parent"]), c["tokens"], [bytes.fromhex(e) for e in c["extras"]])
            self.assertEqual(got.hex(), c["hash"])

    def test_chains(self):
        self.assertGreaterEqual(len(self.v["chains"]), 8)
        for c in self.v["chains"]:
            with self.subTest(c["name"]):
                mm = [MultimodalItem(m["identifier"], m["offset"], m["length"]) for m in c["mm"]]
                got = block_hashes(c["tokens"], c["block_size"], lora=c["lora"], cache_salt=c["cache_salt"], mm=mm)
                self.assertEqual([h.hex() for h in got], c["hashes"])

    def test_max_blocks_is_a_prefix(self):
        c = self.v["chains"][0]
        got = block_hashes(c["tokens"], c["block_size"], max_blocks=1)
        self.assertEqual([h.hex() for h in got], c["hashes"][:1])

    def test_namespaces(self):
        for n in self.v["namespaces"]:
            self.assertEqual(namespace_id(n["descriptor"]), n["id"])

    def test_bad_input(self):
        for bad in ([-1], [2**32], [1.5], ["a"]):
            with self.assertRaises(ValueError):
                block_hashes(bad, 1)
        with self.assertRaises(ValueError):
            block_hashes([1, 2], 0)
        with self.assertRaises(ValueError):
            block_hash(b"short", [1])


if __name__ == "__main__":
    r = unittest.main(exit=False, verbosity=1).result
    sys.exit(0 if r.wasSuccessful() and r.testsRun > 0 else 1)
