"""Helpers shared by the Python benches (bench/python-connector.py, bench/arena.py): a sidecar of their own, tables."""
from __future__ import annotations

import os
import subprocess
import time
from types import SimpleNamespace

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start_sidecar(tmp: str, extra: tuple = ()) -> tuple:
    ep = f"ipc://{os.path.join(tmp, 'kvstash.sock')}"
    cli = os.path.join(REPO, "dist", "cli", "kvstash.js")
    cmd = ["node", cli] if os.path.exists(cli) else ["node", "--import=tsx", os.path.join(REPO, "cli", "kvstash.ts")]
    p = subprocess.Popen(cmd + ["serve", "--endpoints", ep, "--file-root", "", "--dram-bytes", "6GiB", "--log-level", "warn", "--grpc", "", "--metrics", "", *extra],
                         cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 30
    out = ""
    while time.time() < deadline:
        line = p.stdout.readline()
        out += line
        if "index rebuilt" in line:
            return p, ep
        if not line and p.poll() is not None:
            break
    p.kill()
    raise SystemExit(f"sidecar did not start:\n{out}")


def pct(xs: list, p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


def table(head: list, rows: list) -> str:
    w = [max(len(str(r[i])) for r in [head] + rows) for i in range(len(head))]
    line = lambda r: "  ".join(str(x).ljust(w[i]) for i, x in enumerate(r))  # noqa: E731
    return "\n".join([line(head), "  ".join("-" * x for x in w)] + [line(r) for r in rows])




def vllm_configs(ep: str, num_blocks: int, LAYERS: int, HEADS: int, DIM: int, BS: int):
    """A vLLM config stand-in for the connector (the fields kvstash reads), 8B-shaped by default in the benches."""
    ktc = SimpleNamespace(kv_role="kv_both", kv_connector_extra_config={"endpoint": ep, "lookup_timeout_ms": 2000, "load_timeout_ms": 30000,
                                                                        "save_timeout_ms": 30000, "max_pending_save_bytes": 4 << 30})
    mc = SimpleNamespace(model="bench/llama-8b-shape", dtype="bfloat16", use_mla=False, hf_config=SimpleNamespace(num_hidden_layers=LAYERS),
                         get_num_kv_heads=lambda pc: HEADS, get_head_size=lambda: DIM)
    vc = SimpleNamespace(kv_transfer_config=ktc, model_config=mc, cache_config=SimpleNamespace(block_size=BS, cache_dtype="auto"),
                         parallel_config=SimpleNamespace(tensor_parallel_size=1, pipeline_parallel_size=1, rank=0))
    kcc = SimpleNamespace(num_blocks=num_blocks, kv_cache_groups=[SimpleNamespace(layer_names=[], kv_cache_spec=SimpleNamespace(
        block_size=BS, num_kv_heads=HEADS, head_size=DIM, dtype="bfloat16"))])
    return vc, kcc


def paged_worker(ep: str, nb: int, layers: int, heads: int, dim: int, bs: int) -> tuple:
    """A vLLM connector worker over a paged (nb, 2, bs, heads, dim) bf16 CPU cache: (connector, layer names, caches)."""
    import torch

    from kvstash.vllm import KvstashConnector
    from kvstash.vllm_compat import KVConnectorRole

    vc, kcc = vllm_configs(ep, nb, layers, heads, dim, bs)
    w = KvstashConnector(vc, KVConnectorRole.WORKER, kcc)
    names = [f"model.layers.{i}.self_attn.attn" for i in range(layers)]
    kv = {n: torch.randint(-2000, 2000, (nb, 2, bs, heads, dim), dtype=torch.int16).view(torch.bfloat16) for n in names}
    w.register_kv_caches(kv)
    return w, names, kv


def save_then_load(w, names: list, kv: dict, keys: list, src: list, dst: list, batch: int) -> tuple:
    """Save blocks src under keys (one step, save_kv_layer per layer, saves waited for), then load them into dst
    (start_load_kv + wait_for_layer_load per layer); checks the bytes; returns (save seconds, load seconds)."""
    import torch

    from kvstash.vllm_metadata import KvstashConnectorMetadata, LoadSpec, SaveSpec

    def step(md, per_layer):
        t0 = time.perf_counter()
        w.bind_connector_metadata(md)
        w.start_load_kv(None)
        for n in names:
            per_layer(n)
        w.wait_for_save()
        w._worker._wait(w._worker._save_futures, time.monotonic() + 120)
        w.clear_connector_metadata()
        return time.perf_counter() - t0

    plan = [(f"r{i}", keys[i:i + batch]) for i in range(0, len(keys), batch)]
    save_s = step(KvstashConnectorMetadata(saves=[SaveSpec(r, k, src[i * batch:i * batch + len(k)]) for i, (r, k) in enumerate(plan)]),
                  lambda n: w.save_kv_layer(n, kv[n], None))
    load_s = step(KvstashConnectorMetadata(loads=[LoadSpec(r, k, dst[i * batch:i * batch + len(k)]) for i, (r, k) in enumerate(plan)]),
                  w.wait_for_layer_load)
    assert not w.get_block_ids_with_load_errors()
    i, j = torch.tensor(src), torch.tensor(dst)
    assert all(torch.equal(kv[n][i].view(torch.int16), kv[n][j].view(torch.int16)) for n in names), "loaded blocks differ"
    return save_s, load_s
