"""``KvstashHiCacheStorage`` — an SGLang HiCache L3 storage backend that keeps pages in the kvstash sidecar.

Load it through SGLang's ``dynamic`` backend (examples/sglang/README.md)::

  --enable-hierarchical-cache --page-size 64 --hicache-storage-backend dynamic
  --hicache-storage-backend-extra-config '{"backend_name":"kvstash","module_path":"kvstash.sglang",
      "class_name":"KvstashHiCacheStorage","interface_v1":1,"endpoint":"ipc:///run/kvstash.sock"}'

SGLang constructs it as ``KvstashHiCacheStorage(storage_config, kwargs)`` and then calls
``register_mem_pool_host(pool)``. Extra-config keys read here (the rest is SGLang's):

==================  ===========================================  ===============================================
key                 default                                      meaning
==================  ===========================================  ===============================================
``endpoint``        ``$KVSTASH_ENDPOINT`` or the sidecar default  ZeroMQ endpoint of the sidecar
                    ``ipc://$XDG_RUNTIME_DIR/kvstash.sock``
``timeout_ms``      2000                                         deadline of every call (one batch)
``retry_ms``        1000                                         after the sidecar failed to answer, calls fail
                                                                 at once (False / 0) for this long
``tenant``          ``"default"``                                namespace tenant
``model``           ``storage_config.model_name``                namespace model id
``skip_existing``   true                                         batch_set*: one EXISTS first, send only missing
``prefill_tokens_``  0 (no cut)                                   this engine's prefill speed: ``batch_exists``
``per_s``                                                        counts only the leading pages whose tier loads
                                                                 faster than they recompute (kvstash.load_policy)
``hop_bytes_per_s``  2e9                                          sidecar→engine bandwidth off the same-host arena
``token``           ``$KVSTASH_TOKEN``                           bearer token for the data socket's AUTH
``curve_*``         ``$KVSTASH_CURVE_SERVER_KEY``,               ``curve_server_key`` / ``curve_secret_key`` /
                    ``$KVSTASH_CURVE_CLIENT_SECRET_KEY``,        ``curve_public_key``: CURVE keys (z85 or @file;
                    ``$KVSTASH_CURVE_CLIENT_PUBLIC_KEY``         see kvstash.auth); checked here (KVS_CONFIG)
==================  ===========================================  ===============================================

Base class: SGLang's ``HiCacheStorage`` when ``sglang`` is importable; otherwise a local stand-in with the same
method names and signatures (``get``, ``batch_get``, ``set``, ``batch_set``, ``exists``, ``batch_exists``,
``batch_get_v1``, ``batch_set_v1``, the v2 ``batch_exists_v2`` / ``batch_get_v2`` / ``batch_set_v2`` /
``register_mem_host_pool_v2``, ``register_mem_pool_host``, ``clear``, ``get_stats``), so the module imports and
runs in tests and tools without SGLang. The v2 API for hybrid models (Mamba, sliding-window, DSA indexer pools)
and the guard that turns every exception into a failure value are in kvstash.sglang_v2.

Rules:

- Keys: SGLang's 64-hex page keys become their 32 raw bytes (any other string: its SHA-256). SGLang keys carry
  no model and no rank; the kvstash namespace does: model, engine ``"sglang"``, a layout fingerprint (host-pool
  layout, page size, dtype, MHA/MLA, layers, heads, head dim, byte order ``io=v1|flat``), TP rank/size, PP
  rank/size, tenant. MLA: every TP rank uses rank 0/1 — the same keys — and only ``tp_rank == 0`` writes (the
  other ranks' ``batch_set*`` report success without sending).
- Stored page value, zero-copy path (``interface_v1: 1``): the concatenation, in ``get_page_buffer_meta``
  order, of the host-memory regions of the page — per page ``2 × layer`` pointers (layer_first) or 2 (K and V:
  page_first, page_first_direct). Generic path: the flat data page SGLang passes. Both orders agree for
  page_first layouts; ``io`` in the fingerprint keeps them apart anyway.
- ``batch_exists`` is ONE round trip (LOOKUP) and returns the number of leading hits worth loading (all of them
  unless ``prefill_tokens_per_s`` is set). ``batch_get_v1`` reads a
  batch with pipelined GETs and copies each page into the host pool with ``ctypes.memmove``; a page whose size
  does not match its pointers is a miss. ``batch_set_v1`` gathers pages from the pool and PUTs them pipelined.
- Never raises, never returns None from batch calls: every failure (sidecar down, timeout, bad reply, wrong
  sizes) becomes False / 0 entries, is logged (``kvstash.sglang``) and counted (``get_stats``). Every call has a
  deadline. After a failure to reach the sidecar, calls fail fast for ``retry_ms``.
- Threads: SGLang calls from its prefetch and backup threads; each thread gets its own ZeroMQ client.
- ``clear()`` is not supported from the engine (the sidecar holds other namespaces too): it logs a warning.
"""
from __future__ import annotations

import ctypes
import hashlib
import logging
import threading
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from . import errors as E
from .auth import Credentials, options_from_extra
from .client import PUT_PRESENT, PUT_STORED, ThreadLocalClients, default_endpoint
from .errors import KvstashError
from .kv_layout import dtype_name
from .load_policy import worth_loading
from .sglang_arena import arena_get_v1, arena_set_v1
from .sglang_v2 import HybridPoolsMixin, guard_methods

log = logging.getLogger("kvstash.sglang")

try:  # pragma: no cover - depends on the environment
    from sglang.srt.mem_cache.hicache_storage import HiCacheStorage  # type: ignore

    HAVE_SGLANG = True
except Exception:  # sglang absent (or broken): same method names, no behaviour
    HAVE_SGLANG = False

    class HiCacheStorage:  # type: ignore[no-redef]
        """Stand-in for ``sglang.srt.mem_cache.hicache_storage.HiCacheStorage`` (same method names)."""

        def register_mem_pool_host(self, mem_pool_host: Any) -> None:
            self.mem_pool_host = mem_pool_host

        def get(self, key: str, target_location: Any = None, target_sizes: Any = None) -> Any:
            raise NotImplementedError

        def batch_get(self, keys: List[str], target_locations: Any = None, target_sizes: Any = None) -> Any:
            raise NotImplementedError

        def set(self, key: str, value: Any = None, target_location: Any = None, target_sizes: Any = None) -> bool:
            raise NotImplementedError

        def batch_set(self, keys: List[str], values: Any = None, target_locations: Any = None, target_sizes: Any = None) -> bool:
            raise NotImplementedError

        def exists(self, key: str) -> bool:
            raise NotImplementedError

        def batch_exists(self, keys: List[str], extra_info: Any = None) -> int:
            for i, k in enumerate(keys):
                if not self.exists(k):
                    return i
            return len(keys)

        def register_mem_host_pool_v2(self, host_pool: Any, host_pool_name: Any) -> None:
            if not hasattr(self, "registered_pools"):
                self.registered_pools = {}
            self.registered_pools[host_pool_name] = host_pool

        def batch_exists_v2(self, keys: List[str], pool_transfers: Any = None, extra_info: Any = None) -> Any:
            raise NotImplementedError

        def batch_get_v2(self, transfers: Any, extra_info: Any = None) -> Any:
            raise NotImplementedError

        def batch_set_v2(self, transfers: Any, extra_info: Any = None) -> Any:
            raise NotImplementedError

        def batch_get_v1(self, keys: List[str], host_indices: Any, extra_info: Any = None) -> List[bool]:
            raise NotImplementedError

        def batch_set_v1(self, keys: List[str], host_indices: Any, extra_info: Any = None) -> List[bool]:
            raise NotImplementedError

        def clear(self) -> None:
            pass

        def get_stats(self) -> Any:
            return None


def page_key(key: Any) -> bytes:
    """SGLang page key (64 hex chars) → 32 raw bytes; anything else → its SHA-256."""
    if isinstance(key, (bytes, bytearray)) and len(key) == 32:
        return bytes(key)
    s = str(key)
    if len(s) == 64:
        try:
            return bytes.fromhex(s)
        except ValueError:
            pass
    return hashlib.sha256(s.encode("utf-8")).digest()


def _address(buf: Any) -> Tuple[int, Any]:
    """Address of a (possibly read-only) buffer, plus the object that keeps it alive."""
    import numpy as np

    arr = np.frombuffer(buf, dtype=np.uint8)
    return arr.ctypes.data, arr


class _FastFail(KvstashError):
    """Refused without trying: the sidecar failed less than ``retry_ms`` ago."""


class KvstashHiCacheStorage(HybridPoolsMixin, HiCacheStorage):
    def __init__(self, storage_config: Any, kwargs: Optional[Dict[str, Any]] = None) -> None:
        try:  # SGLang's base takes no arguments in the versions examined; accept one that takes the config
            super().__init__()
        except TypeError:
            super().__init__(storage_config)  # type: ignore[call-arg]
        extra: Dict[str, Any] = dict(getattr(storage_config, "extra_config", None) or {})
        extra.update(kwargs or {})
        self.config = storage_config
        self.endpoint = str(extra.get("endpoint") or default_endpoint())
        self.timeout_ms = float(extra.get("timeout_ms", 2000))
        self.retry_ms = float(extra.get("retry_ms", 1000))
        self.tenant = str(extra.get("tenant", "default"))
        self.model = str(extra.get("model") or getattr(storage_config, "model_name", None) or "default")
        self.skip_existing = bool(extra.get("skip_existing", True))
        self.prefill_tokens_per_s = float(extra.get("prefill_tokens_per_s", 0) or 0)
        self.hop_bytes_per_s = float(extra.get("hop_bytes_per_s", 2e9) or 0)
        self.interface_v1 = bool(int(extra.get("interface_v1", 0) or 0))
        self.is_mla = bool(getattr(storage_config, "is_mla_model", False))
        self.tp_rank = int(getattr(storage_config, "tp_rank", 0) or 0)
        self.tp_size = int(getattr(storage_config, "tp_size", 1) or 1)
        self.pp_rank = int(getattr(storage_config, "pp_rank", 0) or 0)
        self.pp_size = int(getattr(storage_config, "pp_size", 1) or 1)
        self.cp_rank = int(getattr(storage_config, "attn_cp_rank", 0) or 0)
        self.cp_size = int(getattr(storage_config, "attn_cp_size", 1) or 1)
        self.writer = not self.is_mla or self.tp_rank == 0
        self.mem_pool_host: Any = None
        self.layout: Optional[str] = None
        self.page_size = 1
        self.dtype: Any = None
        self.fingerprint = "unregistered"
        auth = options_from_extra(extra)
        Credentials.resolve(**auth)  # bad keys or token: KVS_CONFIG here, not on every call
        self._clients = ThreadLocalClients(self.endpoint, timeout_ms=self.timeout_ms, client_name="kvstash-sglang", **auth)
        self._lock = threading.Lock()
        self._local = threading.local()
        self._down_until = 0.0
        self.stats: Dict[str, int] = {k: 0 for k in (
            "exists_calls", "exists_hits", "get_pages", "get_hits", "get_misses", "set_pages", "set_stored",
            "set_skipped", "set_failed", "bytes_read", "bytes_written", "errors", "timeouts", "unavailable", "fast_fails")}
        self.last_error: Optional[str] = None
        log.info("kvstash HiCache backend: endpoint %s, model %s, tp %d/%d, mla %s", self.endpoint, self.model,
                 self.tp_rank, self.tp_size, self.is_mla)

    # ---- namespace --------------------------------------------------------------------------------------

    def register_mem_pool_host(self, mem_pool_host: Any) -> None:
        super().register_mem_pool_host(mem_pool_host)
        self.mem_pool_host = mem_pool_host
        p = mem_pool_host
        self.layout = str(getattr(p, "layout", "layer_first"))
        self.page_size = int(getattr(p, "page_size", 1))
        self.dtype = getattr(p, "dtype", None)
        parts = [f"sglang-hicache;layout={self.layout}", f"page={self.page_size}", f"dtype={dtype_name(self.dtype)}",
                 "mla" if self.is_mla else "mha", f"L={getattr(p, 'layer_num', '?')}"]
        if self.is_mla:
            parts.append(f"D={getattr(p, 'kv_lora_rank', '?')}+{getattr(p, 'qk_rope_head_dim', '?')}")
        else:
            parts += [f"H={getattr(p, 'head_num', '?')}", f"D={getattr(p, 'head_dim', '?')}"]
        if self.cp_size > 1:
            parts.append(f"cp={self.cp_rank}/{self.cp_size}")
        parts.append("io=v1" if self.interface_v1 else "io=flat")
        self.fingerprint = ";".join(parts)

    def descriptor(self) -> Dict[str, Any]:
        tp_rank, tp_size = (0, 1) if self.is_mla else (self.tp_rank, self.tp_size)
        return {"model": self.model, "engine": "sglang", "layout": self.fingerprint, "tp_rank": tp_rank,
                "tp_size": tp_size, "pp_rank": self.pp_rank, "pp_size": self.pp_size, "tenant": self.tenant}

    # ---- plumbing ---------------------------------------------------------------------------------------

    def _client(self) -> Tuple[Any, str, float]:
        """(client, namespace id, deadline in ms left) — raises KvstashError; callers catch everything."""
        if time.monotonic() < self._down_until:
            raise _FastFail(E.UNAVAILABLE, f"sidecar at {self.endpoint} failed recently; retrying after {self.retry_ms:.0f} ms")
        start = time.monotonic()
        c = self._clients.get()
        ns = c.namespace(self.descriptor(), timeout_ms=self.timeout_ms)
        return c, ns, max(1.0, self.timeout_ms - (time.monotonic() - start) * 1000)

    def _failed(self, what: str, err: BaseException) -> None:
        code = getattr(err, "code", None)
        with self._lock:
            self.stats["errors"] += 1
            if isinstance(err, _FastFail):
                self.stats["fast_fails"] += 1
                return
            if code == E.TIMEOUT:
                self.stats["timeouts"] += 1
            if code == E.UNAVAILABLE:
                self.stats["unavailable"] += 1
            if code in (E.TIMEOUT, E.UNAVAILABLE):
                self._down_until = time.monotonic() + self.retry_ms / 1000.0
        self.last_error = f"{what}: {err}"
        log.warning("kvstash %s failed (treated as a miss): %s", what, err)

    def _pages_meta(self, n: int, host_indices: Any) -> Tuple[List[int], List[int], int]:
        ptrs, sizes = self.mem_pool_host.get_page_buffer_meta(host_indices)
        ptrs, sizes = [int(x) for x in ptrs], [int(x) for x in sizes]
        if n == 0 or len(ptrs) != len(sizes) or len(ptrs) % n:
            raise KvstashError(E.FRAME_MISMATCH, f"get_page_buffer_meta gave {len(ptrs)} pointers / {len(sizes)} sizes for {n} pages")
        return ptrs, sizes, len(ptrs) // n

    def _existing(self, c: Any, ns: str, kb: List[bytes], left: float) -> List[bool]:
        if not self.skip_existing:
            return [False] * len(kb)
        return c.exists(ns, kb, timeout_ms=left).exists

    def _put(self, what: str, keys: Sequence[Any], gather) -> List[bool]:
        """PUT pages (only those missing when skip_existing); ``gather(i)`` returns page i's bytes."""
        n = len(keys)
        if n == 0:
            return []
        if not self.writer:
            return [True] * n  # MLA: rank 0 writes the shared page
        try:
            c, ns, left = self._client()
            kb = [page_key(k) for k in keys]
            deadline = time.monotonic() + left / 1000.0
            have = self._existing(c, ns, kb, left)
            todo = [i for i in range(n) if not have[i]]
            ok, written = list(have), 0
            if todo:
                blocks = [gather(i) for i in todo]
                left = max(1.0, (deadline - time.monotonic()) * 1000)
                res = c.put_many(ns, [kb[i] for i in todo], blocks, timeout_ms=left)
                for i, r, b in zip(todo, res, blocks):
                    ok[i] = r in (PUT_STORED, PUT_PRESENT)
                    if ok[i]:
                        written += len(b)
            with self._lock:
                self.stats["bytes_written"] += written
                self.stats["set_pages"] += n
                self.stats["set_skipped"] += n - len(todo)
                self.stats["set_stored"] += sum(1 for i in todo if ok[i])
                self.stats["set_failed"] += sum(1 for x in ok if not x)
            return ok
        except Exception as err:  # never raise into SGLang's backup thread
            self._failed(what, err)
            with self._lock:
                self.stats["set_failed"] += n
            return [False] * n

    def _get(self, what: str, keys: Sequence[Any]) -> List[Optional[memoryview]]:
        c, ns, left = self._client()
        vals = c.get_many(ns, [page_key(k) for k in keys], max_batch_keys=32, timeout_ms=left)
        hits = sum(1 for v in vals if v is not None)
        with self._lock:
            self.stats["get_pages"] += len(keys)
            self.stats["get_hits"] += hits
            self.stats["get_misses"] += len(keys) - hits
        return vals

    # ---- HiCacheStorage: existence ----------------------------------------------------------------------

    def batch_exists(self, keys: List[str], extra_info: Any = None) -> int:
        """Leading pages present, in one EXISTS round trip; 0 on any failure."""
        if not keys:
            return 0
        try:
            c, ns, left = self._client()
            res = c.lookup(ns, [page_key(k) for k in keys], timeout_ms=left)  # LOOKUP: tiers, not only presence
            hop = 0.0 if c.arena_of(ns) is not None else self.hop_bytes_per_s
            page_bytes = int(getattr(self.mem_pool_host, "get_size_per_token", lambda: 0)() or 0) * self.page_size
            # only the leading pages whose tier loads faster than SGLang recomputes them (kvstash.load_policy)
            prefix = worth_loading(res, list(res.tiers), self.page_size, page_bytes, self.prefill_tokens_per_s, hop)
            with self._lock:
                self.stats["exists_calls"] += 1
                self.stats["exists_hits"] += prefix
            return prefix
        except Exception as err:
            self._failed("batch_exists", err)
            return 0

    def exists(self, key: str) -> bool:
        return self.batch_exists([key]) == 1

    # ---- zero-copy path (interface_v1) ------------------------------------------------------------------

    def batch_get_v1(self, keys: List[str], host_indices: Any, extra_info: Any = None) -> List[bool]:
        n = len(keys)
        if n == 0:
            return []
        try:
            ptrs, sizes, per = self._pages_meta(n, host_indices)
            got = arena_get_v1(self, [page_key(k) for k in keys], ptrs, sizes, per)  # same host: from the arena
            if got is not None:
                return got
            vals = self._get("batch_get_v1", keys)
            out, read, wrong = [False] * n, 0, 0
            for i, v in enumerate(vals):
                if v is None:
                    continue
                want = sum(sizes[i * per:(i + 1) * per])
                if v.nbytes != want:
                    log.warning("kvstash page %s has %d bytes, the host pool expects %d: treated as a miss", keys[i], v.nbytes, want)
                    wrong += 1
                    continue
                src, keep = _address(v)
                off = 0
                for j in range(i * per, (i + 1) * per):
                    ctypes.memmove(ptrs[j], src + off, sizes[j])
                    off += sizes[j]
                del keep
                out[i] = True
                read += want
            with self._lock:
                self.stats["bytes_read"] += read
                self.stats["errors"] += wrong
            return out
        except Exception as err:  # never raise into SGLang's prefetch thread
            self._failed("batch_get_v1", err)
            return [False] * n

    def batch_set_v1(self, keys: List[str], host_indices: Any, extra_info: Any = None) -> List[bool]:
        n = len(keys)
        if n == 0:
            return []
        try:
            ptrs, sizes, per = self._pages_meta(n, host_indices)
            if self.writer:  # same host: into arena slots (kvstash.sglang_arena)
                got = arena_set_v1(self, [page_key(k) for k in keys], ptrs, sizes, per)
                if got is not None:
                    return got
        except Exception as err:  # never raise into SGLang's backup thread
            self._failed("batch_set_v1", err)
            with self._lock:
                self.stats["set_failed"] += n
            return [False] * n

        # Pages are gathered into a per-thread staging buffer that is reused across calls (fresh memory costs
        # page faults: ~4x slower here). It is reused only after a call whose every PUT was answered, because
        # ZeroMQ sends it without copying; after any failure a new one is allocated.
        totals = [sum(sizes[i * per:(i + 1) * per]) for i in range(n)]
        stage = self._staging(sum(totals))
        base = stage.ctypes.data
        view = memoryview(stage)
        at = [0]

        def gather(i: int) -> memoryview:
            start = off = at[0]
            for j in range(i * per, (i + 1) * per):
                ctypes.memmove(base + off, ptrs[j], sizes[j])
                off += sizes[j]
            at[0] = off
            return view[start:off]

        ok = self._put("batch_set_v1", keys, gather)
        if not all(ok):
            self._local.stage = None
        return ok

    def _staging(self, nbytes: int) -> Any:
        import numpy as np

        st = getattr(self._local, "stage", None)
        if st is None or st.nbytes < nbytes:
            st = np.empty(max(nbytes, 1), dtype=np.uint8)
            self._local.stage = st
        return st

    # ---- generic path (flat data pages) -----------------------------------------------------------------

    def batch_get(self, keys: List[str], target_locations: Any = None, target_sizes: Any = None) -> List[Any]:
        """Flat pages: copied into ``target_locations[i]`` when given (returned), else new uint8→dtype tensors."""
        n = len(keys)
        try:
            vals = self._get("batch_get", keys)
        except Exception as err:
            self._failed("batch_get", err)
            return [None] * n
        out: List[Any] = []
        for i, v in enumerate(vals):
            try:
                out.append(None if v is None else self._to_tensor(v, None if target_locations is None else target_locations[i]))
            except Exception as err:
                self._failed("batch_get (copy)", err)
                out.append(None)
        return out

    def _to_tensor(self, v: memoryview, target: Any) -> Any:
        import torch

        src = torch.frombuffer(bytearray(v), dtype=torch.uint8)
        if target is None:
            return src.view(self.dtype) if self.dtype is not None and self.dtype != torch.uint8 else src
        flat = target.view(-1).view(torch.uint8)
        if flat.numel() != src.numel():
            raise KvstashError(E.FRAME_MISMATCH, f"page has {src.numel()} bytes, target holds {flat.numel()}")
        flat.copy_(src)
        with self._lock:
            self.stats["bytes_read"] += src.numel()
        return target

    def get(self, key: str, target_location: Any = None, target_sizes: Any = None) -> Any:
        return self.batch_get([key], None if target_location is None else [target_location])[0]

    def batch_set(self, keys: List[str], values: Any = None, target_locations: Any = None, target_sizes: Any = None) -> bool:
        if values is None or len(values) != len(keys):
            log.warning("kvstash batch_set: %d keys but %s values", len(keys), None if values is None else len(values))
            return False

        def gather(i: int) -> Any:
            import torch

            return values[i].detach().contiguous().view(-1).view(torch.uint8).cpu().numpy()

        return all(self._put("batch_set", keys, gather))

    def set(self, key: str, value: Any = None, target_location: Any = None, target_sizes: Any = None) -> bool:
        return self.batch_set([key], [value])

    # ---- management -------------------------------------------------------------------------------------

    def clear(self) -> None:
        log.warning("kvstash: clearing the sidecar from the engine is not supported (it holds other namespaces); "
                    "use kvstash's control plane")

    def get_stats(self) -> Dict[str, Any]:
        with self._lock:
            return {**self.stats, "endpoint": self.endpoint, "namespace": self.fingerprint, "last_error": self.last_error}

    def close(self) -> None:
        self._clients.close_all()


guard_methods(KvstashHiCacheStorage)  # no exception ever reaches SGLang's prefetch/backup threads (sglang_v2.py)
