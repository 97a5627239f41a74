"""vLLM's connector base classes and KV-event classes — or minimal local stand-ins when vLLM is absent.

``kvstash.vllm`` must import everywhere: inside vLLM (scheduler and worker processes), and in tests and
tools where vLLM is not installed. When ``vllm`` imports, the real ``KVConnectorBase_V1``,
``KVConnectorMetadata``, ``KVConnectorRole``, ``SupportsHMA`` (newer releases) and the ``BlockStored`` event
class are used. Otherwise the stand-ins below are used: same names, same constructor signature
``(vllm_config, role, kv_cache_config=None)``, same default hooks as docs/engine-interfaces.md §1, and no
behaviour beyond what the base class documents. ``HAVE_VLLM`` says which one is in use.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field as dataclass_field, fields as dc_fields
from typing import Any, Iterable, List, Optional, Tuple

HAVE_VLLM = False
try:  # pragma: no cover - exercised only where vLLM is installed
    from vllm.distributed.kv_transfer.kv_connector.v1.base import (  # type: ignore
        KVConnectorBase_V1,
        KVConnectorMetadata,
        KVConnectorRole,
    )

    HAVE_VLLM = True
except Exception:  # vLLM absent (or too old to have the V1 API): local stand-ins

    class KVConnectorRole(enum.Enum):  # type: ignore[no-redef]
        SCHEDULER = 0
        WORKER = 1

    class KVConnectorMetadata:  # type: ignore[no-redef]
        """Base of the per-step metadata (scheduler → workers). Must be picklable."""

    class KVConnectorBase_V1:  # type: ignore[no-redef]
        """Stand-in for vllm.distributed.kv_transfer.kv_connector.v1.base.KVConnectorBase_V1."""

        def __init__(self, vllm_config: Any, role: "KVConnectorRole", kv_cache_config: Any = None) -> None:
            if getattr(vllm_config, "kv_transfer_config", None) is None:
                raise ValueError("kv_transfer_config must be set to use a KV connector")
            self._connector_metadata: Optional[KVConnectorMetadata] = None
            self._vllm_config = vllm_config
            self._kv_transfer_config = vllm_config.kv_transfer_config
            self._kv_cache_config = kv_cache_config
            self._role = role

        @property
        def role(self) -> "KVConnectorRole":
            return self._role

        @property
        def prefer_cross_layer_blocks(self) -> bool:
            return False

        def bind_connector_metadata(self, connector_metadata: KVConnectorMetadata) -> None:
            self._connector_metadata = connector_metadata

        def clear_connector_metadata(self) -> None:
            self._connector_metadata = None

        def has_connector_metadata(self) -> bool:
            return self._connector_metadata is not None

        def _get_connector_metadata(self) -> KVConnectorMetadata:
            assert self._connector_metadata is not None
            return self._connector_metadata

        def register_kv_caches(self, kv_caches: dict) -> None:
            return None

        def handle_preemptions(self, *args: Any) -> None:
            return None

        def get_finished(self, finished_req_ids: set) -> Tuple[Optional[set], Optional[set]]:
            return None, None

        def get_block_ids_with_load_errors(self) -> set:
            return set()

        def request_finished(self, request: Any, block_ids: List[int]) -> Tuple[bool, Optional[dict]]:
            return False, None

        def take_events(self) -> Iterable[Any]:
            return ()

        def shutdown(self) -> None:
            return None

try:  # newer vLLM only (base.py @ 003df29): worker -> scheduler metadata, folded with aggregate()
    from vllm.distributed.kv_transfer.kv_connector.v1.base import KVConnectorWorkerMetadata  # type: ignore  # pragma: no cover
except Exception:

    class KVConnectorWorkerMetadata:  # type: ignore[no-redef]
        """Stand-in for vLLM's worker -> scheduler metadata base (abstract ``aggregate(other)``)."""

        def aggregate(self, other: Any) -> Any:
            raise NotImplementedError

try:  # newest vLLM only (base.py @ 7ba3df63: get_transfer_results returns it)
    from vllm.distributed.kv_transfer.kv_connector.v1.base import KVConnectorTransferResults  # type: ignore  # pragma: no cover
except Exception:

    @dataclass
    class KVConnectorTransferResults:  # type: ignore[no-redef]
        """Stand-in: ids of requests whose asynchronous transfers finished; failed receives are in both
        ``finished_recving`` and ``failed_recving``."""

        finished_sending: set = dataclass_field(default_factory=set)
        finished_recving: set = dataclass_field(default_factory=set)
        failed_recving: set = dataclass_field(default_factory=set)

try:  # SupportsHMA exists in newer vLLM only
    from vllm.distributed.kv_transfer.kv_connector.v1.base import SupportsHMA  # type: ignore  # pragma: no cover
except Exception:

    class SupportsHMA:  # type: ignore[no-redef]
        """Stand-in for vLLM's marker mixin of connectors that support the hybrid KV-cache manager."""

        def request_finished_all_groups(self, request: Any, block_ids: Tuple[List[int], ...]) -> Tuple[bool, Optional[dict]]:
            raise NotImplementedError


try:  # pragma: no cover - only with vLLM
    from vllm.distributed.kv_events import BlockStored  # type: ignore
except Exception:

    @dataclass
    class BlockStored:  # type: ignore[no-redef]
        """Stand-in with the field order of vLLM's BlockStored (docs/engine-interfaces.md §3.1)."""

        block_hashes: List[Any]
        parent_block_hash: Any
        token_ids: List[int]
        block_size: int
        lora_id: Optional[int] = None
        medium: Optional[str] = None
        lora_name: Optional[str] = None
        extra_keys: Optional[List[Any]] = None
        group_idx: Optional[int] = None


def _field_names(cls: Any) -> Optional[set]:
    names = getattr(cls, "__struct_fields__", None)  # msgspec.Struct
    if names is not None:
        return set(names)
    try:
        return {f.name for f in dc_fields(cls)}
    except TypeError:
        return None


def make_block_stored(**kw: Any) -> Any:
    """Build a BlockStored with the fields this vLLM version has (unknown ones are left out)."""
    names = _field_names(BlockStored)
    if names is not None:
        kw = {k: v for k, v in kw.items() if k in names}
    return BlockStored(**kw)
