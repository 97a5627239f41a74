"""Shared pieces of the vLLM connector harness: stand-ins for the vLLM objects the connector reads
(configs, Request, scheduler output), the deterministic "model" that fills KV, and pipe framing.

The stand-in objects carry exactly the attributes vLLM's own classes have for the fields the connector uses
(docs/engine-interfaces.md §1); nothing here imports kvstash internals except the public connector.
"""
from __future__ import annotations

import hashlib
import pickle
import struct
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Dict, List, Optional

ITEMSIZE = {"bfloat16": 2, "float16": 2, "float32": 4}


def layer_names(n: int) -> List[str]:
    # deliberately not in natural order: the connector must sort layers itself
    return [f"model.layers.{i}.self_attn.attn" for i in sorted(range(n), key=str)]


class MLAAttentionSpec(SimpleNamespace):
    pass


class FullAttentionSpec(SimpleNamespace):
    pass


class SlidingWindowSpec(SimpleNamespace):
    pass


def make_configs(spec: Dict[str, Any], extra: Dict[str, Any], rank: int = 0):
    """(vllm_config, kv_cache_config) like vLLM's, for a tiny model described by ``spec``."""
    mla = spec["layout"] == "mla"
    heads = 1 if mla else spec["heads"]
    kv_role = spec.get("kv_role", "kv_both")
    ktc = SimpleNamespace(kv_connector="KvstashConnector", kv_connector_module_path="kvstash.vllm", kv_role=kv_role,
                          kv_load_failure_policy=spec.get("failure_policy", "recompute"), kv_connector_extra_config=dict(extra),
                          is_kv_producer=kv_role in ("kv_producer", "kv_both"), is_kv_consumer=kv_role in ("kv_consumer", "kv_both"))
    model = SimpleNamespace(model=spec.get("model", "test/tiny-llama"), dtype=spec["dtype"], use_mla=mla,
                            hf_config=SimpleNamespace(num_hidden_layers=spec["layers"]),
                            get_num_kv_heads=lambda pc: heads, get_head_size=lambda: spec["head_size"])
    # vllm/config/kv_events.py KVEventsConfig: the connector announces events only when they are on
    kec = SimpleNamespace(enable_kv_cache_events=bool(spec.get("kv_events", False)), publisher="zmq")
    vllm_config = SimpleNamespace(
        kv_transfer_config=ktc, model_config=model, kv_events_config=kec,
        cache_config=SimpleNamespace(block_size=spec["block_size"], cache_dtype="auto"),
        parallel_config=SimpleNamespace(tensor_parallel_size=spec.get("tp", 1), pipeline_parallel_size=1, rank=rank))
    cls = MLAAttentionSpec if mla else FullAttentionSpec
    kspec = cls(block_size=spec["block_size"], num_kv_heads=heads, head_size=spec["head_size"], dtype=spec["dtype"])
    groups = [SimpleNamespace(layer_names=layer_names(spec["layers"]), kv_cache_spec=kspec)]
    if spec.get("groups"):  # vLLM's hybrid KV-cache manager: one spec per group (SlidingWindowSpec has sliding_window)
        names = layer_names(spec["layers"])
        groups = [SimpleNamespace(layer_names=[n for n in names if int(n.split(".")[2]) in g["layers"]],
                                  kv_cache_spec=(SlidingWindowSpec if g.get("window") else cls)(
                                      block_size=spec["block_size"], num_kv_heads=heads, head_size=spec["head_size"], dtype=spec["dtype"],
                                      **({"sliding_window": g["window"]} if g.get("window") else {})))
                  for g in spec["groups"]]
    kv_cache_config = SimpleNamespace(num_blocks=pool_blocks(spec), kv_cache_groups=groups)
    return vllm_config, kv_cache_config


def pool_blocks(spec: Dict[str, Any]) -> int:
    """Blocks of the (shared) pool: with KV-cache groups each group's id of position i is id + group × num_blocks."""
    return spec["num_blocks"] * len(spec.get("groups") or [None])


def group_block(spec: Dict[str, Any], block: int, group: int) -> int:
    return block + group * spec["num_blocks"]


# ---- vLLM's own block hashes (sha256_cbor, PYTHONHASHSEED=0), for requests' block_hashes and events ----------

def _cbor_none_hash() -> bytes:
    import cbor2

    return hashlib.sha256(cbor2.dumps("0", canonical=True)).digest()


def vllm_block_hashes(tokens: List[int], block_size: int, extra: Optional[tuple] = None) -> List[bytes]:
    import cbor2

    out, parent = [], _cbor_none_hash()
    for b in range(len(tokens) // block_size):
        parent = hashlib.sha256(cbor2.dumps((parent, tuple(tokens[b * block_size:(b + 1) * block_size]), extra), canonical=True)).digest()
        out.append(parent)
    return out


class Request:
    """The attributes of vllm.v1.request.Request that the connector reads."""

    def __init__(self, request_id: str, prompt: List[int], block_size: int, lora_name: Optional[str] = None,
                 cache_salt: Optional[str] = None) -> None:
        self.request_id = request_id
        self.prompt_token_ids = list(prompt)
        self.output_token_ids: List[int] = []
        self.lora_request = SimpleNamespace(lora_name=lora_name, lora_int_id=1) if lora_name else None
        self.cache_salt = cache_salt
        self.block_size = block_size
        self.num_computed_tokens = 0

    @property
    def all_token_ids(self) -> List[int]:
        return self.prompt_token_ids + self.output_token_ids

    @property
    def block_hashes(self) -> List[bytes]:
        return vllm_block_hashes(self.all_token_ids, self.block_size)


class KVCacheBlocks:
    def __init__(self, ids: List[int], spec: Optional[Dict[str, Any]] = None) -> None:
        self._ids = list(ids)
        self._spec = spec

    def get_block_ids(self):
        return per_group(self._ids, self._spec)


def per_group(ids: List[int], spec: Optional[Dict[str, Any]]) -> tuple:
    """Block ids as vLLM hands them over: one list per KV-cache group."""
    n = len((spec or {}).get("groups") or [None])
    return tuple([group_block(spec, b, g) for b in ids] if g else list(ids) for g in range(n))


@dataclass
class NewRequestData:
    req_id: str
    prompt_token_ids: List[int]
    block_ids: tuple
    num_computed_tokens: int


@dataclass
class CachedRequestData:
    req_ids: List[str] = field(default_factory=list)
    resumed_from_preemption: List[bool] = field(default_factory=list)
    new_token_ids: List[List[int]] = field(default_factory=list)
    new_block_ids: List[Optional[tuple]] = field(default_factory=list)
    num_computed_tokens: List[int] = field(default_factory=list)


# ---- the deterministic "model": KV of token t depends on tokens[0..t] only --------------------------------

class Truth:
    """KV bytes of one token for every layer, derived from the token prefix (like a real model's KV)."""

    def __init__(self, layers: int, token_bytes: int, rank: int = 0) -> None:
        self.layers, self.token_bytes, self.rank = layers, token_bytes, rank
        self._cache: Dict[bytes, bytes] = {}

    def prefix_hashes(self, tokens: List[int]) -> List[bytes]:
        out, h = [], b"truth-v1/rank-%d" % self.rank  # each tensor-parallel rank holds different KV
        for t in tokens:
            h = hashlib.sha256(h + struct.pack("<I", t)).digest()
            out.append(h)
        return out

    def token(self, prefix_hash: bytes) -> bytes:
        v = self._cache.get(prefix_hash)
        if v is None:
            v = self._cache[prefix_hash] = hashlib.shake_128(prefix_hash).digest(self.layers * self.token_bytes)
        return v

    def layer(self, prefix_hash: bytes, li: int) -> bytes:
        return self.token(prefix_hash)[li * self.token_bytes:(li + 1) * self.token_bytes]


def next_token(tokens: List[int]) -> int:
    """Greedy 'decoding': the next token is a function of the prefix."""
    return int.from_bytes(hashlib.sha256(struct.pack(f"<{len(tokens)}I", *tokens)).digest()[:4], "little") % 32000


# ---- framing over pipes ---------------------------------------------------------------------------------

def send(f: Any, obj: Any) -> None:
    b = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    f.write(struct.pack("<I", len(b)) + b)
    f.flush()


def recv(f: Any) -> Any:
    head = f.read(4)
    if len(head) < 4:
        raise EOFError("peer closed the pipe")
    (n,) = struct.unpack("<I", head)
    return pickle.loads(f.read(n))
