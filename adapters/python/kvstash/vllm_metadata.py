"""Per-step metadata the kvstash vLLM connector sends from the scheduler to its workers.

It travels inside ``SchedulerOutput.kv_connector_metadata`` and is pickled (msgspec/pickle) between
processes, so it holds only plain data: request ids, 32-byte keys (kvstash canonical block hashes, chain
order) and vLLM block ids (of the spec's KV-cache group).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from .vllm_compat import KVConnectorMetadata, KVConnectorWorkerMetadata


@dataclass
class LoadSpec:
    """Load ``keys[i]`` into block ``block_ids[i]``. ``is_async``: between steps, reported by get_finished."""

    req_id: str
    keys: List[bytes]
    block_ids: List[int]
    is_async: bool = False
    #: lease tag the scheduler's lookup pinned these blocks under; the worker releases it after loading
    lease: Optional[str] = None
    #: KV-cache group (vLLM's hybrid KV-cache manager): the block ids are that group's
    group: int = 0


@dataclass
class SaveSpec:
    """After this step's forward pass, save block ``block_ids[i]`` under ``keys[i]``."""

    req_id: str
    keys: List[bytes]
    block_ids: List[int]
    group: int = 0


@dataclass
class KvstashConnectorMetadata(KVConnectorMetadata):
    loads: List[LoadSpec] = field(default_factory=list)
    saves: List[SaveSpec] = field(default_factory=list)
    #: requests preempted in this step (newest vLLM passes this metadata to handle_preemptions)
    preempted_req_ids: List[str] = field(default_factory=list)


@dataclass
class KvstashWorkerMetadata(KVConnectorWorkerMetadata):
    """Worker → scheduler, every step while a worker cannot load (vLLM ``build_connector_worker_meta``, folded
    over all workers with ``aggregate``, handed to the scheduler's ``update_connector_output``)."""

    disabled: List[str] = field(default_factory=list)

    def aggregate(self, other: "KVConnectorWorkerMetadata") -> "KvstashWorkerMetadata":
        return KvstashWorkerMetadata(self.disabled + list(getattr(other, "disabled", None) or []))
