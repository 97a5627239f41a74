"""The connector against recorded vLLM base classes (test/fixtures/vllm-base/*.json, one per supported vLLM
version; docs/support-matrix.md): every abstract method is implemented with the base's parameter names, every
method the connector overrides accepts the parameters vLLM passes in that version (positionally, as vLLM
calls them), ``**kwargs`` where the base has it, and overridden properties stay properties. A signature drift in a new vLLM
fails here once its base class is recorded. Run from test/integration/vllm-engines.test.ts."""
import glob
import inspect
import json
import os
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "..", "..", "test", "fixtures", "vllm-base")

from kvstash.vllm import KvstashConnector  # noqa: E402
from kvstash.vllm_compat import KVConnectorTransferResults  # noqa: E402
from kvstash.vllm_metadata import KvstashWorkerMetadata  # noqa: E402

# Hooks kvstash needs for correct behaviour (not only the abstract ones), whenever the recorded base has them.
MUST_OVERRIDE = {"register_kv_caches", "handle_preemptions", "get_finished", "get_block_ids_with_load_errors", "shutdown",
                 "update_connector_output", "request_finished", "take_events", "build_connector_worker_meta",
                 "get_transfer_results", "requires_kv_delivery", "get_required_kvcache_layout",
                 "requires_piecewise_for_cudagraph", "request_finished_all_groups"}
TARGET = {"KVConnectorBase_V1": KvstashConnector, "SupportsHMA": KvstashConnector, "KVConnectorWorkerMetadata": KvstashWorkerMetadata}


def load(path):
    with open(path) as f:
        fx = json.load(f)
    if fx.get("extends"):
        base = load(os.path.join(FIXTURES, fx["extends"]))
        for cls, methods in fx["classes"].items():
            base["classes"].setdefault(cls, {}).update(methods)
        base["source"] = fx["source"]
        return base
    return fx


def positional(params):
    return [p.split("=")[0] for p in params if not p.startswith("*")]


class SupportMatrix(unittest.TestCase):
    def test_fixtures_exist(self):
        self.assertGreaterEqual(len(glob.glob(os.path.join(FIXTURES, "*.json"))), 3)

    def test_connector_matches_every_recorded_base(self):
        for path in sorted(glob.glob(os.path.join(FIXTURES, "*.json"))):
            fx = load(path)
            for cls_name, methods in fx["classes"].items():
                if cls_name == "KVConnectorTransferResults":
                    names = {f for f in getattr(KVConnectorTransferResults, "__dataclass_fields__", {})} or set(dir(KVConnectorTransferResults()))
                    for f in methods["fields"]:
                        self.assertIn(f, names, f"{fx['source']}: KVConnectorTransferResults.{f}")
                    continue
                target = TARGET[cls_name]
                for name, m in methods.items():
                    with self.subTest(source=fx["source"], method=f"{cls_name}.{name}"):
                        if m.get("abstract") or name in MUST_OVERRIDE:
                            self.assertIn(name, target.__dict__, f"{name} must be implemented by {target.__name__} itself")
                        if name not in target.__dict__:
                            continue  # inherited: the real base class of that version provides it
                        if m.get("kind") == "property":
                            self.assertIsInstance(target.__dict__[name], property, f"{name} must stay a property")
                            continue
                        fn = inspect.getattr_static(target, name)
                        fn = fn.__func__ if isinstance(fn, (classmethod, staticmethod)) else fn
                        sig = inspect.signature(fn)
                        args = positional(m["params"])
                        required = [p for p in m["params"] if "=" not in p and not p.startswith("*")]
                        sig.bind(None, *[object()] * len(required))  # vLLM passes them positionally
                        if name in target.__dict__ and name != "__init__" and m.get("abstract"):
                            own = [p.name for p in list(sig.parameters.values())[1:] if p.kind in (p.POSITIONAL_OR_KEYWORD, p.POSITIONAL_ONLY)]
                            self.assertEqual(own[: len(args)], args, f"{name}: parameter names differ from the base")
                        if "**kwargs" in m["params"]:
                            self.assertTrue(any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()), f"{name} must take **kwargs")


if __name__ == "__main__":
    unittest.main(verbosity=1)
