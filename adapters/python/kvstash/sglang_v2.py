"""SGLang HiCache v2 storage API (hybrid models) and the guard that keeps SGLang's threads alive.

SGLang's controllers call ``batch_exists_v2`` / ``batch_get_v2`` / ``batch_set_v2`` with ``PoolTransfer`` lists for
hybrid models (Mamba state, sliding-window, DSA indexer, DeepSeek-V4 compressed pools, draft pools). The base
class raises ``NotImplementedError`` there, on a daemon thread that HiCache never restarts: the storage tier
would be off for the life of the process. Source: ``python/sglang/srt/mem_cache/hicache_storage.py`` @ 001067ff
(``PoolName``, ``PoolHitPolicy``, ``PoolTransfer``, ``PoolTransferResult``, ``register_mem_host_pool_v2``, and
the reference ``HiCacheFile`` v2 methods).

Rules (as the reference file backend, same commit):

- Pools are registered by name with ``register_mem_host_pool_v2(pool, name)``. Pool ``kv`` is the KV pool: its
  pages keep their v1 keys (``page_key(key)``) and, with ``interface_v1``, go through ``batch_get_v1`` /
  ``batch_set_v1``, so v1 and v2 callers share pages. Any other pool's page of ``key`` is stored under the key
  string ``f"{key}.{pool}"`` (its SHA-256), in the same namespace.
- Non-KV pages (and KV pages without ``interface_v1``) are the pool's flat data pages:
  ``get_data_page(index, flat=True)`` to save, ``get_dummy_flat_data_page()`` + ``set_from_flat_data_page(index,
  page)`` to load, with ``index = host_indices[i * page_size]``. A stored page of another size is a miss.
- ``batch_exists_v2``: ONE EXISTS round trip for the KV keys and every pool's keys. ``kv_hit_pages`` = the
  leading KV pages present, shrunk by every pool: ``all_pages`` needs each page of the prefix in that pool,
  ``trailing_pages`` only the last ``len(transfer.keys)`` pages of the prefix (the longest such prefix wins).
  ``extra_pool_hit_pages[name]`` = that pool's boundary (only pools with a non-zero boundary, and ``kv``).
- Results: ``{pool name: [bool per key]}``; ``host_indices`` of the wrong length → all False for that pool.

Guard (``guard_methods``): every public storage method of the backend is wrapped so that an exception — a bad
argument, a pool without the expected methods, a bug — is logged, counted (``errors``) and answered with the
method's failure value (False, 0, None entries, all-False lists, an empty ``PoolTransferResult``), never raised
into SGLang's prefetch or backup thread.
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

log = logging.getLogger("kvstash.sglang")

try:  # pragma: no cover - depends on the environment
    from sglang.srt.mem_cache.hicache_storage import PoolTransferResult  # type: ignore
except Exception:

    @dataclass
    class PoolTransferResult:  # type: ignore[no-redef]
        """Stand-in for SGLang's (same fields): usable KV prefix, and each pool's hit count."""

        kv_hit_pages: int
        extra_pool_hit_pages: Dict[str, int] = field(default_factory=dict)


KV_POOL = "kv"


def pool_name(name: Any) -> str:
    """``PoolName.MAMBA`` (a str enum) or ``"mamba"`` → ``"mamba"``."""
    return str(getattr(name, "value", name))


def _policy(transfer: Any) -> str:
    return str(getattr(getattr(transfer, "hit_policy", None), "value", getattr(transfer, "hit_policy", None)) or "all_pages")


def _n(keys: Any) -> int:
    try:
        return len(keys)
    except Exception:
        return 0


class HybridPoolsMixin:
    """The v2 methods of KvstashHiCacheStorage (uses its _client, _put, _get, _failed, batch_*_v1)."""

    pools_v2: Dict[str, Any]

    def register_mem_host_pool_v2(self, host_pool: Any, host_pool_name: Any) -> None:
        name = pool_name(host_pool_name)
        if not hasattr(self, "pools_v2"):
            self.pools_v2 = {}
        self.pools_v2[name] = host_pool
        self.registered_pools = getattr(self, "registered_pools", None) or {}
        self.registered_pools[host_pool_name] = host_pool  # what SGLang's base stores
        if name == KV_POOL and getattr(self, "mem_pool_host", None) is None:
            self.register_mem_pool_host(host_pool)  # type: ignore[attr-defined]

    def _pool_key(self, key: str, name: str) -> str:
        return key if name == KV_POOL else f"{key}.{name}"

    def _pool(self, name: str) -> Any:
        pools = getattr(self, "pools_v2", None) or {}
        if name in pools:
            return pools[name]
        if name == KV_POOL and getattr(self, "mem_pool_host", None) is not None:
            return self.mem_pool_host  # type: ignore[attr-defined]
        raise KeyError(f"no host pool {name!r} registered (register_mem_host_pool_v2)")

    def _zero_copy_kv(self, name: str) -> bool:
        return name == KV_POOL and bool(getattr(self, "interface_v1", False)) and self._pool(name) is getattr(self, "mem_pool_host", None)

    def batch_exists_v2(self, keys: List[str], pool_transfers: Optional[List[Any]] = None, extra_info: Any = None) -> Any:
        from .sglang import page_key

        keys = list(keys or [])
        transfers = list(pool_transfers or [])
        if not keys:
            return PoolTransferResult(0, {})
        try:
            c, ns, left = self._client()  # type: ignore[attr-defined]
            names = [pool_name(t.name) for t in transfers]
            ask = [page_key(k) for k in keys] + [page_key(self._pool_key(k, n)) for n in names for k in keys]
            have = c.exists(ns, ask, timeout_ms=left).exists
        except Exception as err:
            self._failed("batch_exists_v2", err)  # type: ignore[attr-defined]
            return PoolTransferResult(0, {})
        n = len(keys)
        kv = next((i for i in range(n) if not have[i]), n)
        hits: Dict[str, int] = {KV_POOL: kv} if kv else {}
        final = kv
        for j, (t, name) in enumerate(zip(transfers, names)):
            if final == 0:
                break
            got = have[n * (j + 1): n * (j + 2)]
            if _policy(t) == "trailing_pages":
                trailing = max(1, _n(getattr(t, "keys", None)))
                boundary = next((p for p in range(kv, 0, -1) if all(got[max(0, p - trailing):p])), 0)
            else:
                boundary = next((i for i in range(kv) if not got[i]), kv)
            if boundary:
                hits[name] = boundary
            final = min(final, boundary)
        with self._lock:  # type: ignore[attr-defined]
            self.stats["exists_calls"] += 1  # type: ignore[attr-defined]
            self.stats["exists_hits"] += final  # type: ignore[attr-defined]
        return PoolTransferResult(final, hits)

    def _indices(self, t: Any, pool: Any) -> Optional[List[int]]:
        """Host index of each page of the transfer, or None when host_indices has the wrong length."""
        keys = list(getattr(t, "keys", None) or [])
        ps = int(getattr(pool, "page_size", 1) or 1)
        hi = getattr(t, "host_indices", None)
        if hi is None or _n(hi) != len(keys) * ps:
            log.warning("kvstash v2 %s: host_indices of %d entries for %d pages of %d", pool_name(t.name), _n(hi), len(keys), ps)
            return None
        return [int(hi[i * ps]) for i in range(len(keys))]

    def batch_get_v2(self, transfers: List[Any], extra_info: Any = None) -> Dict[str, List[bool]]:
        out: Dict[str, List[bool]] = {}
        for t in transfers or []:
            name, keys = pool_name(t.name), list(getattr(t, "keys", None) or [])
            if not keys:
                out[name] = []
            elif self._zero_copy_kv(name):
                out[name] = list(self.batch_get_v1(keys, t.host_indices, extra_info))  # type: ignore[attr-defined]
            else:
                out[name] = self._get_flat(name, keys, t)
        return out

    def _get_flat(self, name: str, keys: List[str], t: Any) -> List[bool]:
        import torch

        ok = [False] * len(keys)
        try:
            pool = self._pool(name)
            idx = self._indices(t, pool)
            if idx is None:
                return ok
            vals = self._get("batch_get_v2", [self._pool_key(k, name) for k in keys])  # type: ignore[attr-defined]
            read = 0
            for i, v in enumerate(vals):
                if v is None:
                    continue
                page = pool.get_dummy_flat_data_page()
                flat = page.view(-1).view(torch.uint8)
                if v.nbytes != flat.numel():
                    log.warning("kvstash %s page %s has %d bytes, the pool's page %d: treated as a miss", name, keys[i], v.nbytes, flat.numel())
                    continue
                flat.copy_(torch.frombuffer(bytearray(v), dtype=torch.uint8))
                pool.set_from_flat_data_page(idx[i], page)
                ok[i] = True
                read += v.nbytes
            with self._lock:  # type: ignore[attr-defined]
                self.stats["bytes_read"] += read  # type: ignore[attr-defined]
        except Exception as err:  # never raise into SGLang's prefetch thread
            self._failed("batch_get_v2", err)  # type: ignore[attr-defined]
        return ok

    def batch_set_v2(self, transfers: List[Any], extra_info: Any = None) -> Dict[str, List[bool]]:
        out: Dict[str, List[bool]] = {}
        for t in transfers or []:
            name, keys = pool_name(t.name), list(getattr(t, "keys", None) or [])
            if not keys:
                out[name] = []
            elif self._zero_copy_kv(name):
                out[name] = list(self.batch_set_v1(keys, t.host_indices, extra_info))  # type: ignore[attr-defined]
            else:
                out[name] = self._set_flat(name, keys, t)
        return out

    def _set_flat(self, name: str, keys: List[str], t: Any) -> List[bool]:
        import torch

        try:
            pool = self._pool(name)
            idx = self._indices(t, pool)
        except Exception as err:
            self._failed("batch_set_v2", err)  # type: ignore[attr-defined]
            return [False] * len(keys)
        if idx is None:
            return [False] * len(keys)
        ids: List[int] = idx

        def gather(i: int) -> Any:
            return pool.get_data_page(ids[i], flat=True).detach().contiguous().view(-1).view(torch.uint8).cpu().numpy()

        return self._put("batch_set_v2", [self._pool_key(k, name) for k in keys], gather)  # type: ignore[attr-defined]


def _failure(name: str, args: tuple, kwargs: dict) -> Any:
    keys = args[0] if args else kwargs.get("keys", kwargs.get("transfers"))
    if name in ("batch_get_v1", "batch_set_v1"):
        return [False] * _n(keys)
    if name == "batch_get":
        return [None] * _n(keys)
    if name in ("batch_get_v2", "batch_set_v2"):
        return {pool_name(getattr(t, "name", "?")): [False] * _n(getattr(t, "keys", None)) for t in (keys or [])} if _n(keys) else {}
    if name == "batch_exists_v2":
        return PoolTransferResult(0, {})
    if name == "batch_exists":
        return 0
    if name == "get":
        return None
    if name in ("get_stats", "clear"):
        return None
    return False  # set, batch_set, exists


GUARDED = ("batch_exists", "exists", "batch_get_v1", "batch_set_v1", "batch_get", "get", "batch_set", "set",
           "batch_exists_v2", "batch_get_v2", "batch_set_v2", "clear", "get_stats")


def _guard(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(self, *args, **kwargs)
        except Exception as err:  # a storage fault must never end SGLang's prefetch/backup thread
            try:
                self._failed(name, err)
            except Exception:
                pass
            return _failure(name, args, kwargs)

    guarded.__kvstash_guarded__ = True  # type: ignore[attr-defined]
    return guarded


def guard_methods(cls: type) -> type:
    """Wrap the public storage methods of ``cls`` (see the module docstring)."""
    for name in GUARDED:
        fn = getattr(cls, name, None)
        if fn is not None and not getattr(fn, "__kvstash_guarded__", False):
            setattr(cls, name, _guard(name, fn))
    return cls
