"""``KvstashConnector`` — a vLLM ``KVConnectorBase_V1`` that stores KV blocks in the kvstash sidecar.

Load it with ``--kv-transfer-config '{"kv_connector":"KvstashConnector","kv_connector_module_path":
"kvstash.vllm","kv_role":"kv_both","kv_load_failure_policy":"recompute","kv_connector_extra_config":
{"endpoint":"ipc:///run/kvstash.sock"}}'`` (examples/vllm/README.md has complete command lines; the
extra-config keys are listed in kvstash.vllm_settings).

Structure: vLLM builds one instance with role SCHEDULER (kvstash.vllm_scheduler: lookups, load and save
plans, KV events) and one with role WORKER in every worker process (kvstash.vllm_worker: layout detection,
gather/scatter, background transfers). They share nothing but the pickled per-step metadata
(kvstash.vllm_metadata). This module only routes vLLM's calls to the half that owns them.

Without vLLM installed (tests, tools) the module still imports: kvstash.vllm_compat provides stand-ins for
vLLM's base classes with the same names and signatures.

Namespace: model (``model_config.model`` or extra ``model``), engine ``"vllm"``, the layout fingerprint
(dtype, block size, layers, KV heads, head dim, ``kv``/``mla``; kvstash.kv_layout.LayoutSpec), TP/PP rank and
size, tenant (extra ``tenant``). The scheduler looks up in every rank's namespace and takes the minimum.

Roles: ``kv_both`` loads and saves, ``kv_producer`` only saves (and waits for its saves in
``wait_for_save``, so a decode instance can find them), ``kv_consumer`` only loads.

Hybrid KV-cache manager (HMA): the class subclasses ``SupportsHMA`` (when vLLM has it) and implements
``request_finished_all_groups``. Several attention groups (sliding-window next to full attention) are stored
per group, with per-group block ids, a sliding-window group loading only the blocks inside its window
(kvstash.vllm_groups); Mamba groups are refused at start-up with a message asking for
``--disable-hybrid-kv-cache-manager``.

Failures never break the engine: a lookup error or timeout counts as 0 hits; a failed load is reported
through ``get_block_ids_with_load_errors`` (and ``get_transfer_results``); a failed save is dropped and counted.
vLLM's ``kv_load_failure_policy`` defaults to ``"fail"`` (vllm/config/kv_transfer.py, main 2025-12), which ends
a request with a failed load as FINISHED_ERROR: the connector refuses to start under it (KVS_CONFIG, one line)
unless ``kv_connector_extra_config.allow_fail_policy`` is true, and the blocks a lookup promised are leased in
the sidecar until the worker loaded them (kvstash.vllm_scheduler), so load failures stay rare.

Lifecycles (docs/support-matrix.md): the older worker order (start_load_kv before the forward pass,
get_finished) and the newest one (start_load_kv after the forward pass when the step has no synchronous load,
``SchedulerOutput.has_sync_kv_loads``; get_transfer_results; build_connector_worker_meta) both work.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Iterable, List, Optional, Set, Tuple

from .kv_layout import LayoutSpec
from .vllm_compat import HAVE_VLLM, KVConnectorBase_V1, KVConnectorRole, SupportsHMA
from .vllm_metadata import KvstashConnectorMetadata, LoadSpec, SaveSpec
from .vllm_scheduler import SchedulerSide
from .vllm_settings import ConnectorSettings, check_failure_policy, extra_config, layout_spec, parallel_ranks
from .vllm_groups import GroupedWorker, group_layout, group_specs, groups_of
from .vllm_worker import WorkerSide

log = logging.getLogger("kvstash.vllm")


def _configure_logging() -> None:
    """``KVSTASH_LOG_LEVEL`` (debug, info, warn, error; as for the sidecar) gives the ``kvstash`` loggers their
    own stderr handler; without it they propagate to whatever logging the engine configured."""
    lvl = os.environ.get("KVSTASH_LOG_LEVEL", "").strip().lower()
    if not lvl:
        return
    lg = logging.getLogger("kvstash")
    level = {"trace": "DEBUG", "warn": "WARNING", "silent": "CRITICAL"}.get(lvl, lvl.upper())
    if not lg.handlers:
        h = logging.StreamHandler()
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        lg.addHandler(h)
        lg.propagate = False
    lg.setLevel(level if level in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL") else "INFO")


_configure_logging()

__all__ = ["KvstashConnector", "KvstashConnectorMetadata", "LoadSpec", "SaveSpec", "HAVE_VLLM"]


def _is_scheduler(role: Any) -> bool:
    return role == KVConnectorRole.SCHEDULER or getattr(role, "name", None) == "SCHEDULER" or role == 0


def namespace_descriptor(settings: ConnectorSettings, vllm_config: Any, spec: LayoutSpec, tp_rank: int, tp_size: int,
                         pp_rank: int, pp_size: int, layout: Optional[str] = None) -> dict:
    mc = getattr(vllm_config, "model_config", None)
    model = settings.model or getattr(mc, "model", None) or getattr(mc, "served_model_name", None) or "default"
    return {"model": str(model), "engine": "vllm", "layout": layout or spec.fingerprint(), "tp_rank": tp_rank, "tp_size": tp_size,
            "pp_rank": pp_rank, "pp_size": pp_size, "tenant": settings.tenant}


class KvstashConnector(KVConnectorBase_V1, SupportsHMA):
    def __init__(self, vllm_config: Any, role: Any, kv_cache_config: Any = None) -> None:
        try:
            super().__init__(vllm_config, role, kv_cache_config)
        except TypeError:  # older vLLM: (vllm_config, role)
            super().__init__(vllm_config, role)
        ktc = vllm_config.kv_transfer_config
        self._settings = ConnectorSettings.from_extra(extra_config(vllm_config))
        self._spec = layout_spec(vllm_config, kv_cache_config)
        kv_role = str(getattr(ktc, "kv_role", None) or "kv_both")
        # a pure producer never loads: the failure policy cannot fail any of its requests
        self._failure_policy = check_failure_policy(vllm_config, self._settings) if kv_role != "kv_producer" else None
        self._kv_role = kv_role
        r = parallel_ranks(vllm_config)
        self._scheduler: Optional[SchedulerSide] = None
        self._worker: Any = None
        # one KV-cache group, or several from vLLM's hybrid KV-cache manager (kvstash.vllm_groups)
        groups = group_specs(self._spec, kv_cache_config) if len(groups_of(kv_cache_config)) > 1 else [(self._spec, None, [])]
        n = len(groups)
        if _is_scheduler(role):
            nss = [namespace_descriptor(self._settings, vllm_config, spec, t, r["tp_size"], p, r["pp_size"], group_layout(spec, g, n))
                   for g, (spec, _w, _l) in enumerate(groups) for p in range(r["pp_size"]) for t in range(r["tp_size"])]
            kec = getattr(vllm_config, "kv_events_config", None)  # vllm/config/kv_events.py: KVEventsConfig
            self._scheduler = SchedulerSide(self._settings, self._spec.block_size, nss,
                                            can_load=kv_role != "kv_producer", can_save=kv_role != "kv_consumer",
                                            events=bool(getattr(kec, "enable_kv_cache_events", False)),
                                            windows=[w for _s, w, _l in groups],
                                            block_bytes=self._spec.layer_bytes() * self._spec.num_layers // max(1, r["pp_size"]))
        else:
            workers = [WorkerSide(self._settings, spec, namespace_descriptor(self._settings, vllm_config, spec, r["tp_rank"], r["tp_size"],
                                                                             r["pp_rank"], r["pp_size"], group_layout(spec, g, n)),
                                  getattr(kv_cache_config, "num_blocks", None), save_sync=kv_role == "kv_producer")
                       for g, (spec, _w, _l) in enumerate(groups)]
            self._worker = workers[0] if n == 1 else GroupedWorker(workers, [names for _s, _w, names in groups])
        log.info("KvstashConnector %s: endpoint %s, layout %s, role %s%s", "scheduler" if self._scheduler else "worker",
                 self._settings.endpoint, self._spec.fingerprint(), kv_role, "" if HAVE_VLLM else " (vLLM not installed: stand-in base)")

    # ---- properties and class hooks ---------------------------------------------------------------------

    @property
    def requires_kv_delivery(self) -> bool:
        return False  # a best-effort cache: a preempted request is simply recomputed

    @classmethod
    def get_required_kvcache_layout(cls, vllm_config: Any) -> Optional[str]:
        return None  # any layout: blocks are stored in a canonical order

    @classmethod
    def requires_piecewise_for_cudagraph(cls, extra_config: Any = None) -> bool:
        return True  # wait_for_layer_load / save_kv_layer work per layer and must run outside CUDA graphs

    # ---- worker side ------------------------------------------------------------------------------------

    def _w(self) -> Any:
        if self._worker is None:
            raise RuntimeError("worker-side method called on the scheduler-side KvstashConnector")
        return self._worker

    def register_kv_caches(self, kv_caches: dict) -> None:
        self._w().register_kv_caches(kv_caches)

    def start_load_kv(self, forward_context: Any, **kwargs: Any) -> None:
        self._w().start_load_kv(getattr(self, "_connector_metadata", None))

    def wait_for_layer_load(self, layer_name: str) -> None:
        self._w().wait_for_layer_load(layer_name)

    def save_kv_layer(self, layer_name: str, kv_layer: Any, attn_metadata: Any, **kwargs: Any) -> None:
        self._w().save_kv_layer(getattr(self, "_connector_metadata", None), layer_name)

    def wait_for_save(self) -> None:
        self._w().wait_for_save()

    def get_finished(self, finished_req_ids: Set[str]) -> Tuple[Optional[Set[str]], Optional[Set[str]]]:
        return self._w().get_finished(finished_req_ids)

    def get_block_ids_with_load_errors(self) -> Set[int]:
        return self._w().get_block_ids_with_load_errors()

    def get_transfer_results(self, finished_req_ids: Set[str]) -> Any:
        """Newest vLLM: finished/failed asynchronous loads as one KVConnectorTransferResults."""
        return self._w().get_transfer_results(finished_req_ids)

    def build_connector_worker_meta(self) -> Any:
        return self._worker.build_connector_worker_meta() if self._worker is not None else None

    def handle_preemptions(self, arg: Any = None) -> None:
        """Newest vLLM passes the connector metadata, older ones the set of preempted request ids."""
        if self._worker is not None and arg is not None:
            self._worker.handle_preemptions(arg)

    # ---- scheduler side ---------------------------------------------------------------------------------

    def _s(self) -> SchedulerSide:
        if self._scheduler is None:
            raise RuntimeError("scheduler-side method called on a worker-side KvstashConnector")
        return self._scheduler

    def get_num_new_matched_tokens(self, request: Any, num_computed_tokens: int) -> Tuple[Optional[int], bool]:
        return self._s().get_num_new_matched_tokens(request, num_computed_tokens)

    def update_state_after_alloc(self, request: Any, blocks: Any, num_external_tokens: int) -> None:
        self._s().update_state_after_alloc(request, blocks, num_external_tokens)

    def build_connector_meta(self, scheduler_output: Any) -> KvstashConnectorMetadata:
        return self._s().build_connector_meta(scheduler_output)

    def request_finished(self, request: Any, block_ids: List[int]) -> Tuple[bool, Optional[dict]]:
        return self._s().request_finished(request, block_ids)

    def request_finished_all_groups(self, request: Any, block_ids: Tuple[List[int], ...]) -> Tuple[bool, Optional[dict]]:
        return self._s().request_finished(request, block_ids)

    def update_connector_output(self, connector_output: Any) -> None:
        if self._scheduler is not None:
            self._scheduler.update_connector_output(connector_output)

    def take_events(self) -> Iterable[Any]:
        return self._scheduler.take_events() if self._scheduler is not None else ()

    def shutdown(self) -> None:
        if self._worker is not None:
            self._worker.shutdown()
        if self._scheduler is not None:
            self._scheduler.close()
