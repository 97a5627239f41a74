"""Unit checks of the vLLM connector's pure logic (no sidecar): layout detection, the scheduler's save plan
(num_publishable_block_hashes, prompt embeddings, saved blocks not repeated), roles, a worker with a KV
tensor that disagrees with the config. Run from test/integration/vllm-connector.test.ts."""
import os
import sys
import unittest
from types import SimpleNamespace

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "test", "integration", "py"))

import torch  # noqa: E402
from vllm_harness_common import CachedRequestData, KVCacheBlocks, NewRequestData, Request, make_configs  # noqa: E402

from kvstash.kv_layout import LayoutError, LayoutSpec, TensorLayout, _logical, detect_layout, gather_blocks, index_runs, ordered_layers, scatter_blocks  # noqa: E402
from kvstash.vllm import KvstashConnector  # noqa: E402
from kvstash.vllm_compat import KVConnectorRole  # noqa: E402
from kvstash.vllm_metadata import KvstashConnectorMetadata, LoadSpec  # noqa: E402

SPEC = {"layout": "kv_first", "dtype": "bfloat16", "layers": 2, "block_size": 4, "heads": 2, "head_size": 8, "num_blocks": 6}
NOWHERE = {"endpoint": "ipc:///nonexistent/kvstash-unit.sock", "lookup_timeout_ms": 50, "load_timeout_ms": 200}


def strides(shape):
    return torch.empty(shape).stride()


class Layout(unittest.TestCase):
    spec = LayoutSpec("bfloat16", 16, 4, 2, 8, False)

    def test_both_5d_layouts_with_two_heads(self):
        self.assertEqual(detect_layout((2, 10, 16, 2, 8), strides((2, 10, 16, 2, 8)), self.spec, 10).kind, "kv_first")
        self.assertEqual(detect_layout((10, 2, 16, 2, 8), strides((10, 2, 16, 2, 8)), self.spec, 10).kind, "blocks_first")
        hnd = torch.empty(10, 2, 2, 16, 8).permute(0, 1, 3, 2, 4)
        lay = detect_layout(hnd.shape, hnd.stride(), self.spec, 10)
        self.assertEqual((lay.kind, lay.hnd), ("blocks_first", True))

    def test_block_count_decides_and_ambiguity_needs_a_hint(self):
        with self.assertRaises(LayoutError):  # 10 blocks registered, tensor says 12
            detect_layout((2, 12, 16, 2, 8), strides((2, 12, 16, 2, 8)), self.spec, 10)
        with self.assertRaises(LayoutError):
            detect_layout((2, 2, 16, 2, 8), strides((2, 2, 16, 2, 8)), self.spec, 2)
        self.assertEqual(detect_layout((2, 2, 16, 2, 8), strides((2, 2, 16, 2, 8)), self.spec, 2, "blocks_first").kind, "blocks_first")

    def test_refused_shapes(self):
        for shape in ((2, 10, 16, 4, 8), (10, 16, 8), (10, 2, 16, 16), (2, 10, 16, 2, 8, 1)):
            with self.assertRaises(LayoutError):
                detect_layout(shape, strides(shape), self.spec, 10)
        mla = LayoutSpec("bfloat16", 16, 4, 1, 8, True)
        self.assertEqual(detect_layout((10, 16, 8), strides((10, 16, 8)), mla, 10).kind, "mla")

    def test_backend_shapes(self):
        cpu = detect_layout((2, 10, 2, 16, 8), strides((2, 10, 2, 16, 8)), self.spec, 10)
        self.assertEqual((cpu.kind, cpu.heads_first, cpu.dim), ("kv_first", True, 0))
        pad = detect_layout((10, 2, 16, 2, 12), strides((10, 2, 16, 2, 12)), self.spec, 10)
        self.assertEqual((pad.kind, pad.heads_first, pad.dim), ("blocks_first", False, 12))
        for shape in ((2, 10, 16 * 2 * 8), (10, 2, 16, 2, 4), (10, 2, 16, 2, 17)):  # flat paged, narrower, too wide
            with self.assertRaises(LayoutError):
                detect_layout(shape, strides(shape), self.spec, 10)

    def test_block_runs_copy_like_an_indexed_copy(self):
        self.assertEqual(index_runs([1, 3, 5, 7, 2, 9, 10, 4, 4]), [(0, 1, 2, 4), (4, 2, 7, 2), (6, 10, 1, 1), (7, 4, 1, 1), (8, 4, 1, 1)])
        gen = torch.Generator().manual_seed(7)
        cases = [list(range(1, 24, 2)), list(range(3, 15)), [5, 6, 7, 20, 21, 22, 23, 0, 1, 2], torch.randperm(24, generator=gen)[:12].tolist()]
        for kind, shape in (("kv_first", (2, 24, 4, 3, 5)), ("blocks_first", (24, 2, 4, 3, 5)), ("blocks_first", (24, 2, 3, 4, 5)), ("mla", (24, 4, 5))):
            lay = TensorLayout(kind, shape[2] == 3, 24, shape[2] == 3, 0)
            for ids in cases:
                kv, idx = torch.randn(shape, generator=gen), torch.tensor(ids)
                logical = _logical(kv, lay)
                ref = torch.index_select(logical, 1, idx).transpose(0, 1) if kind == "kv_first" else torch.index_select(logical, 0, idx)
                got = torch.empty_like(ref.contiguous())
                gather_blocks(kv, lay, idx, got)
                self.assertTrue(torch.equal(got, ref), (kind, shape, ids))
                src, want = torch.randn(got.shape, generator=gen), kv.clone()
                w = _logical(want, lay)
                w.index_copy_(1, idx, src.transpose(0, 1)) if kind == "kv_first" else w.index_copy_(0, idx, src)
                scatter_blocks(kv, lay, idx, src)
                self.assertTrue(torch.equal(kv, want), (kind, shape, ids))

    def test_layer_order_is_natural(self):
        self.assertEqual(ordered_layers(["l.10.attn", "l.2.attn", "l.1.attn"]), ["l.1.attn", "l.2.attn", "l.10.attn"])


def sched(extra=None, spec=SPEC):
    vc, kcc = make_configs(spec, {**NOWHERE, **(extra or {})})
    return KvstashConnector(vc, KVConnectorRole.SCHEDULER, kcc)


def output(new=(), cached=None, nst=None):
    so = SimpleNamespace(scheduled_new_reqs=list(new), scheduled_cached_reqs=cached or CachedRequestData(), num_scheduled_tokens=nst or {})
    return so


class SchedulerPlan(unittest.TestCase):
    def test_saves_respect_num_publishable_block_hashes_and_are_not_repeated(self):
        c = sched()
        r = Request("r", list(range(1, 23)), 4)  # 5 full blocks
        r.num_publishable_block_hashes = 3
        self.assertEqual(c.get_num_new_matched_tokens(r, 0), (0, False))  # sidecar absent: 0, no exception
        c.update_state_after_alloc(r, KVCacheBlocks([5, 4, 3, 2, 1, 0]), 0)
        md = c.build_connector_meta(output([NewRequestData("r", r.prompt_token_ids, ([5, 4, 3, 2, 1, 0],), 0)], nst={"r": 22}))
        self.assertEqual([s.block_ids for s in md.saves], [[5, 4, 3]])
        r.num_publishable_block_hashes = 5
        cached = CachedRequestData(["r"], [False], [[]], [None], [22])
        md = c.build_connector_meta(output(cached=cached, nst={"r": 1}))
        self.assertEqual([s.block_ids for s in md.saves], [[2, 1]])
        self.assertEqual(len(md.saves[0].keys), 2)
        md = c.build_connector_meta(output(cached=CachedRequestData(["r"], [False], [[]], [None], [23]), nst={"r": 1}))
        self.assertEqual(md.saves, [])
        self.assertEqual(c.request_finished(r, [5, 4, 3, 2, 1, 0]), (False, None))
        c.shutdown()

    def test_prompt_embeds_bypass_and_roles(self):
        c = sched()
        r = Request("e", list(range(1, 23)), 4)
        r.prompt_embeds = object()
        self.assertEqual(c.get_num_new_matched_tokens(r, 0), (0, False))
        c.update_state_after_alloc(r, KVCacheBlocks(list(range(6))), 0)
        self.assertEqual(c.build_connector_meta(output([NewRequestData("e", r.prompt_token_ids, (list(range(6)),), 0)], nst={"e": 22})).saves, [])
        c.shutdown()
        c = sched(spec={**SPEC, "kv_role": "kv_consumer"})
        r = Request("k", list(range(1, 23)), 4)
        c.get_num_new_matched_tokens(r, 0)
        c.update_state_after_alloc(r, KVCacheBlocks(list(range(6))), 0)
        self.assertEqual(c.build_connector_meta(output([NewRequestData("k", r.prompt_token_ids, (list(range(6)),), 0)], nst={"k": 22})).saves, [])
        c.shutdown()

    def test_several_kv_cache_groups_and_refused_mamba(self):
        vc, kcc = make_configs(SPEC, NOWHERE)
        g = kcc.kv_cache_groups[0]
        sw = SimpleNamespace(layer_names=["model.layers.1.attn"], kv_cache_spec=SimpleNamespace(**{**vars(g.kv_cache_spec), "sliding_window": 8}))
        kcc.kv_cache_groups = [SimpleNamespace(layer_names=["model.layers.0.attn"], kv_cache_spec=g.kv_cache_spec), sw]
        c = KvstashConnector(vc, KVConnectorRole.SCHEDULER, kcc)
        self.assertEqual(c._scheduler.windows, [None, 3])  # ceil((8 - 1) / 4) + 1 blocks
        self.assertEqual(len({d["layout"] for d in c._scheduler.namespaces}), 2)
        c.shutdown()
        kcc.kv_cache_groups = [kcc.kv_cache_groups[0], SimpleNamespace(layer_names=["m.1.mixer"], kv_cache_spec=SimpleNamespace(shapes=((4, 8),), block_size=4))]
        with self.assertRaisesRegex(ValueError, "disable-hybrid-kv-cache-manager"):
            KvstashConnector(vc, KVConnectorRole.SCHEDULER, kcc)


class Worker(unittest.TestCase):
    def test_mismatching_tensor_disables_and_loads_fail_over(self):
        vc, kcc = make_configs(SPEC, NOWHERE)
        w = KvstashConnector(vc, KVConnectorRole.WORKER, kcc)
        w.register_kv_caches({"model.layers.0.attn": torch.zeros(2, 6, 4, 2, 8, dtype=torch.float16)})  # config says bf16
        self.assertIn("dtype", w._worker.disabled)
        md = KvstashConnectorMetadata(loads=[LoadSpec("x", [bytes(32)] * 2, [3, 4]), LoadSpec("y", [bytes(32)], [5], is_async=True)])
        w.bind_connector_metadata(md)
        w.start_load_kv(None)
        w.wait_for_layer_load("model.layers.0.attn")
        w.save_kv_layer("model.layers.0.attn", None, None)
        w.wait_for_save()
        self.assertEqual(w.get_finished(set()), (None, {"y"}))
        self.assertEqual(w.get_block_ids_with_load_errors(), {3, 4, 5})
        w.handle_preemptions({"y"})
        w.handle_preemptions(md)
        w.shutdown()

    def test_unreachable_sidecar_fails_loads_within_the_deadline(self):
        import time

        vc, kcc = make_configs(SPEC, NOWHERE)
        w = KvstashConnector(vc, KVConnectorRole.WORKER, kcc)
        kv = {f"model.layers.{i}.attn": torch.zeros(2, 6, 4, 2, 8, dtype=torch.bfloat16) for i in range(2)}
        w.register_kv_caches(kv)
        self.assertIsNone(w._worker.disabled)
        w.bind_connector_metadata(KvstashConnectorMetadata(loads=[LoadSpec("x", [bytes(32)] * 2, [1, 2])]))
        t0 = time.monotonic()
        w.start_load_kv(None)
        for n in kv:
            w.wait_for_layer_load(n)
        w.wait_for_save()
        self.assertLess(time.monotonic() - t0, 0.2 + 0.6)
        self.assertEqual(w.get_block_ids_with_load_errors(), {1, 2})
        self.assertTrue(all(torch.count_nonzero(t) == 0 for t in kv.values()), "nothing was written")
        w.shutdown()

    def test_dropped_partial_step_returns_exactly_its_reservation_gpu_path(self):
        from unittest import mock

        from kvstash.vllm_metadata import SaveSpec

        vc, kcc = make_configs(SPEC, NOWHERE)
        w = KvstashConnector(vc, KVConnectorRole.WORKER, kcc)
        names = [f"model.layers.{i}.attn" for i in range(2)]
        w.register_kv_caches({n: torch.zeros(2, 6, 4, 2, 8, dtype=torch.bfloat16) for n in names})
        ws = w._worker
        ws.cuda = True  # the GPU path (layer-major staging) on CPU: no pinning, no streams
        ws._host = lambda n, layer_major: torch.empty((2, n, 2, 4, 2, 8) if layer_major else (n, 2, 2, 4, 2, 8), dtype=torch.bfloat16)
        md = KvstashConnectorMetadata(saves=[SaveSpec("r", [bytes(32)], [0])])
        w.bind_connector_metadata(md)
        w.save_kv_layer(names[0], None, None)  # 1 of 2 layers: the step is not saved
        with mock.patch.object(torch.cuda, "current_stream", lambda: SimpleNamespace(synchronize=lambda: None)):
            w.wait_for_save()
        self.assertEqual(ws._pending_bytes, 0)
        w.shutdown()


if __name__ == "__main__":
    r = unittest.main(exit=False, verbosity=1).result
    sys.exit(0 if r.wasSuccessful() and r.testsRun > 0 else 1)
