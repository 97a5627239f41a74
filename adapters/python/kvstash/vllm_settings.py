"""Settings of the vLLM connector (``kv_connector_extra_config``) and the KV layout spec from vLLM's config.

Extra-config keys (all optional):

=======================  ======================================================  =============================
key                      meaning                                                 default
=======================  ======================================================  =============================
endpoint                 sidecar data socket                                     ``$KVSTASH_ENDPOINT``, else
                                                                                 ``ipc://$XDG_RUNTIME_DIR/kvstash.sock``
                                                                                 (or the temp dir)
lookup_timeout_ms        deadline of the scheduler's lookup; past it: 0 hits     50
load_timeout_ms          deadline of a load (the forward pass waits at most      2000
                         this long, then reports the blocks as failed)
save_timeout_ms          deadline of a background save (PUT)                     10000
retry_interval_ms        after a failed lookup, skip lookups for this long       1000
prefill_tokens_per_s     this engine's prefill speed, for load-or-recompute      0: measured from the engine's
                         (kvstash.load_policy); measured values win              own steps
hop_bytes_per_s          sidecar→worker bandwidth over the socket (not the       2e9
                         same-host arena), for load-or-recompute
lease_ms                 blocks a lookup promised stay pinned in the sidecar     load_timeout_ms + 5000
                         until the worker loaded them or this long (0: no lease)
allow_fail_policy        start although kv_load_failure_policy is "fail" (every  false
                         failed load then ends its request with an error)
load_kv_async            load between steps (get_finished) instead of inside     false
                         the forward pass
model                    namespace model id                                      ``model_config.model``
tenant                   namespace tenant                                        ``"default"``
save_generated           also save blocks filled by generated tokens             true
max_pending_save_bytes   host bytes of saves waiting to be sent; beyond it new   1 GiB
                         saves are dropped (it is a cache)
kv_layout                ``kv_first`` / ``blocks_first``: only when a 5-D tensor
                         cannot be told apart (2 blocks)
token                    bearer token (``authTokens``) for the data socket's     ``$KVSTASH_TOKEN``
                         AUTH; ``@file`` reads it from a file
curve_server_key         the sidecar's CURVE public key (z85, ``@file``):        ``$KVSTASH_CURVE_SERVER_KEY``
                         encrypts the data socket
curve_secret_key         this engine's CURVE secret key (z85, ``@file``, or a    ``$KVSTASH_CURVE_CLIENT_SECRET_KEY``
                         ``kvstash keygen`` output file); listed in
                         ``curveClients``, it authenticates too
curve_public_key         its public key (optional: derived from the secret)      ``$KVSTASH_CURVE_CLIENT_PUBLIC_KEY``
=======================  ======================================================  =============================

Auth settings are checked when the settings are read (``KVS_CONFIG``); the recipe is in kvstash.auth.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from .auth import Credentials, options_from_extra
from .client import default_endpoint
from .kv_layout import LayoutError, LayoutSpec, dtype_name


def _bool(v: Any) -> bool:
    if isinstance(v, str):
        return v.strip().lower() in ("1", "true", "yes", "on")
    return bool(v)


@dataclass
class ConnectorSettings:
    endpoint: str
    lookup_timeout_ms: float = 50
    load_timeout_ms: float = 2000
    save_timeout_ms: float = 10000
    retry_interval_ms: float = 1000
    prefill_tokens_per_s: float = 0.0
    hop_bytes_per_s: float = 2e9
    load_kv_async: bool = False
    model: Optional[str] = None
    tenant: str = "default"
    save_generated: bool = True
    max_pending_save_bytes: int = 1 << 30
    kv_layout: Optional[str] = None
    lease_ms: Optional[float] = None  #: None: load_timeout_ms + 5000 (see lease_window_ms)
    allow_fail_policy: bool = False
    auth: Dict[str, Optional[str]] = field(default_factory=dict, repr=False)  # KvstashClient auth keywords

    def lease_window_ms(self) -> float:
        """How long blocks promised by a lookup stay pinned when the worker never releases them: past the load
        deadline, plus the scheduling delay between lookup and load (one or more steps)."""
        return float(self.lease_ms) if self.lease_ms is not None else self.load_timeout_ms + 5000.0

    def client_auth(self) -> Dict[str, Optional[str]]:
        """Keyword arguments for every KvstashClient of the connector (token, curve_* keys)."""
        return dict(self.auth)

    @classmethod
    def from_extra(cls, extra: Optional[Dict[str, Any]]) -> "ConnectorSettings":
        e = dict(extra or {})
        s = cls(endpoint=str(e.get("endpoint") or default_endpoint()))
        for k in ("lookup_timeout_ms", "load_timeout_ms", "save_timeout_ms", "retry_interval_ms", "prefill_tokens_per_s", "hop_bytes_per_s", "lease_ms"):
            if k in e:
                setattr(s, k, float(e[k]))
        for k in ("load_kv_async", "save_generated", "allow_fail_policy"):
            if k in e:
                setattr(s, k, _bool(e[k]))
        if e.get("model"):
            s.model = str(e["model"])
        if e.get("tenant"):
            s.tenant = str(e["tenant"])
        if "max_pending_save_bytes" in e:
            s.max_pending_save_bytes = int(e["max_pending_save_bytes"])
        if e.get("kv_layout"):
            s.kv_layout = str(e["kv_layout"])
        s.auth = options_from_extra(e)
        Credentials.resolve(**s.auth)  # bad keys or token: KVS_CONFIG now, not at the first lookup
        return s


def check_failure_policy(vllm_config: Any, settings: ConnectorSettings) -> str:
    """Read ``kv_transfer_config.kv_load_failure_policy`` and refuse ``"fail"`` unless ``allow_fail_policy``.

    vLLM ``vllm/config/kv_transfer.py`` (main, 2025-12; field added with the policy, default ``"fail"``):
    ``kv_load_failure_policy: Literal["recompute", "fail"] = "fail"``; ``vllm/v1/core/sched/scheduler.py`` sets
    ``recompute_kv_load_failures = policy == "recompute"`` and under ``"fail"`` finishes every request with a
    failed block as ``FINISHED_ERROR``. A cache miss must never fail a request, so kvstash wants ``"recompute"``.
    Older vLLM without the field always recomputes: returns ``"recompute"``.
    """
    ktc = getattr(vllm_config, "kv_transfer_config", None)
    policy = str(getattr(ktc, "kv_load_failure_policy", None) or "recompute")
    if policy == "fail" and not settings.allow_fail_policy:
        raise ValueError('KVS_CONFIG: kv_transfer_config.kv_load_failure_policy is "fail" (vLLM\'s default): a kvstash '
                         'load failure would end the request with an error; set "kv_load_failure_policy":"recompute" '
                         '(or kv_connector_extra_config.allow_fail_policy=true to accept that)')
    return policy


def extra_config(vllm_config: Any) -> Dict[str, Any]:
    ktc = getattr(vllm_config, "kv_transfer_config", None)
    return dict(getattr(ktc, "kv_connector_extra_config", None) or {})


def _call(obj: Any, name: str, *args: Any) -> Any:
    f = getattr(obj, name, None)
    if f is None:
        return None
    try:
        return f(*args)
    except Exception:
        return None


def layout_spec(vllm_config: Any, kv_cache_config: Any = None) -> LayoutSpec:
    """Derive the KV layout spec from vLLM's config, the same way in the scheduler and in every worker.

    Sources, first found wins: ``kv_cache_config.kv_cache_groups[0].kv_cache_spec`` (block_size,
    num_kv_heads, head_size, dtype; MLA when the spec class name contains "MLA" or it has ``use_mla``), then
    ``model_config`` (``get_num_kv_heads(parallel_config)``, ``get_head_size()``, ``use_mla``, ``dtype``).
    The KV dtype is ``cache_config.cache_dtype`` unless it is "auto". Layers: ``hf_text_config`` /
    ``hf_config.num_hidden_layers``, else the number of layer names in ``kv_cache_config``.
    """
    mc = getattr(vllm_config, "model_config", None)
    cc = getattr(vllm_config, "cache_config", None)
    pc = getattr(vllm_config, "parallel_config", None)
    groups = list(getattr(kv_cache_config, "kv_cache_groups", None) or [])
    kspec = getattr(groups[0], "kv_cache_spec", None) if groups else None
    block_size = getattr(kspec, "block_size", None) or getattr(cc, "block_size", None)
    heads = getattr(kspec, "num_kv_heads", None) or _call(mc, "get_num_kv_heads", pc)
    head_size = getattr(kspec, "head_size", None) or _call(mc, "get_head_size")
    mla = bool(getattr(kspec, "use_mla", False) or "MLA" in type(kspec).__name__) if kspec is not None \
        else bool(getattr(mc, "use_mla", False))
    cache_dtype = getattr(cc, "cache_dtype", "auto")
    dtype = getattr(kspec, "dtype", None) or (cache_dtype if cache_dtype not in (None, "auto") else getattr(mc, "dtype", None))
    hf = getattr(mc, "hf_text_config", None) or getattr(mc, "hf_config", None)
    layers = getattr(hf, "num_hidden_layers", None)
    if not layers and groups:
        layers = sum(len(getattr(g, "layer_names", ()) or ()) for g in groups)
    missing = [n for n, v in (("block_size", block_size), ("num_kv_heads", heads), ("head_size", head_size),
                              ("dtype", dtype), ("num_layers", layers)) if not v]
    if missing:
        raise LayoutError(f"cannot derive the KV layout from vLLM's config: missing {', '.join(missing)}")
    return LayoutSpec(dtype_name(dtype), int(block_size), int(layers), 1 if mla else int(heads), int(head_size), mla)  # type: ignore[arg-type]  # none is None: `missing` above


def parallel_ranks(vllm_config: Any) -> Dict[str, int]:
    """tp/pp rank and size of this process. Ranks come from vLLM's parallel state when it is initialised,
    else from ``parallel_config.rank`` (global rank = pp_rank × tp_size + tp_rank); sizes from parallel_config."""
    pc = getattr(vllm_config, "parallel_config", None)
    tp_size = int(getattr(pc, "tensor_parallel_size", 1) or 1)
    pp_size = int(getattr(pc, "pipeline_parallel_size", 1) or 1)
    tp_rank = pp_rank = None
    try:  # pragma: no cover - only inside vLLM workers
        from vllm.distributed import parallel_state as ps  # type: ignore

        tp_rank = ps.get_tensor_model_parallel_rank()
        pp_rank = ps.get_pp_group().rank_in_group
    except Exception:
        rank = int(getattr(pc, "rank", 0) or 0)
        tp_rank, pp_rank = rank % tp_size, (rank // tp_size) % pp_size
    return {"tp_rank": int(tp_rank), "tp_size": tp_size, "pp_rank": int(pp_rank), "pp_size": pp_size}
