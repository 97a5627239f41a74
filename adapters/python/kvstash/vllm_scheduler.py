"""Scheduler-side half of the kvstash vLLM connector (role SCHEDULER, in vLLM's EngineCore process).

- Keys are kvstash canonical block hashes computed here from the request's token ids, LoRA name and cache
  salt (and multimodal items where the request carries them) — not ``request.block_hashes``: vLLM's own
  hashes start from a random seed in every process unless PYTHONHASHSEED is fixed, so they cannot be
  storage keys that survive restarts and match across hosts (docs/architecture.md "Block identity").
  vLLM's hashes are used only in the KV events this side announces, so routers can match them.
- ``lookup`` asks the sidecar, within ``lookup_timeout_ms`` (default 50), how many leading blocks it holds in every
  tensor/pipeline-parallel rank's namespace and takes the minimum. Timeout or error → 0 tokens, and lookups
  are skipped for ``retry_interval_ms`` (the sidecar being down costs one deadline, not one per request). A
  lookup with no connection to send on (sidecar absent, or dead: ZeroMQ saw its socket close) answers 0 at
  once, without waiting for the deadline: the worst case is one deadline, 50 ms at the defaults. The namespaces
  are registered (HELLO) at start-up, off the engine's steps (≤ 1 s for a connection, then ≤ 5 s); if that failed
  (sidecar absent or stalled then), the first lookup on a live connection registers them within its own deadline.
- Leases: the lookup pins the blocks it promises (``lease`` = ``vllm:<request id>``, ``lease_ms`` =
  ``lease_window_ms``, renewed by a repeated lookup) so that eviction between ``get_num_new_matched_tokens``
  and the worker's load does not turn a hit into a load error; the worker releases the lease after its load.
- Workers that switched themselves off (a KV layout they do not recognise) say so in their per-step worker
  metadata (``build_connector_worker_meta`` → ``update_connector_output``, vLLM
  ``vllm/distributed/kv_transfer/kv_connector/v1/base.py`` @ 003df29); from then on this side answers 0 hits
  (logged once, counted as ``worker_disabled``). vLLM releases without worker metadata (13f4ad0 and older)
  have no channel for it: there a disabled worker turns hits into load errors (recomputed).
- KV events: only when ``kv_events_config.enable_kv_cache_events`` is on (vLLM ``vllm/config/kv_events.py``);
  ``take_events`` never waits for the sidecar: saved runs are confirmed by LOOKUPs on a background thread
  with its own client, and each call returns the events confirmed since the last one.
- The last token of the sequence is never counted: at most ``(len(tokens) - 1) // block_size`` blocks.
- ``get_num_new_matched_tokens`` has no side effect besides remembering its latest answer per request (which
  ``update_state_after_alloc`` consumes); calling it again gives the same answer for the same sidecar state.
- Saves: every scheduled request's blocks that become full in this step (and are not known to be stored
  already: loaded from kvstash, or local prefix-cache hits, which were saved when first computed) are listed
  in the metadata; at most ``request.num_publishable_block_hashes`` leading blocks when vLLM sets it.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from . import errors as E
from .client import KvstashClient
from .errors import KvstashError
from .hashing import MultimodalItem, block_hashes
from .load_policy import PrefillRate, worth_loading
from .vllm_compat import make_block_stored
from .vllm_metadata import KvstashConnectorMetadata, LoadSpec, SaveSpec

log = logging.getLogger("kvstash.vllm")
#: of lookup_timeout_ms, kept for giving up after a timeout (raising, counting, logging) so the hook stays within it
RETURN_MARGIN_MS = 1.0


def request_tokens(request: Any) -> List[int]:
    toks = getattr(request, "all_token_ids", None)
    if toks is None:
        toks = getattr(request, "prompt_token_ids", None) or []
    return list(toks)


NULL_BLOCK = 0  # vLLM's BlockPool reserves block 0 as null_block (sliding-window positions outside the window)


def group_ids(block_ids: Any, n: int) -> List[List[int]]:
    """Block ids per KV-cache group (vLLM: a tuple of lists, one per group; older: one list)."""
    if block_ids is None:
        return [[] for _ in range(n)]
    if isinstance(block_ids, (tuple, list)) and block_ids and isinstance(block_ids[0], (list, tuple)):
        out = [list(x) for x in block_ids][:n]
        return out + [[] for _ in range(n - len(out))]
    return [list(block_ids)] + [[] for _ in range(n - 1)]


def group0(block_ids: Any) -> List[int]:
    """vLLM passes block ids as a tuple of lists (one per KV-cache group) or, in older versions, one list."""
    if block_ids is None:
        return []
    if isinstance(block_ids, (tuple, list)) and block_ids and isinstance(block_ids[0], (list, tuple)):
        return list(block_ids[0])
    return list(block_ids)


def _mm_items(request: Any) -> Optional[List[MultimodalItem]]:
    items: List[MultimodalItem] = []
    for f in getattr(request, "mm_features", None) or []:
        pos = getattr(f, "mm_position", None)
        ident = getattr(f, "identifier", None) or getattr(f, "mm_hash", None)
        if pos is None or ident is None:
            return None
        items.append(MultimodalItem(str(ident), int(pos.offset), int(pos.length)))
    if not items:
        for ident, pos in zip(getattr(request, "mm_hashes", None) or [], getattr(request, "mm_positions", None) or []):
            items.append(MultimodalItem(str(ident), int(pos.offset), int(pos.length)))
    return items


class _Chain:
    """kvstash hashes of one request, extended as its tokens grow. ``ok`` is False when the request cannot
    be keyed by token ids (prompt embeddings, unreadable multimodal items): such requests bypass kvstash."""

    def __init__(self, request: Any, block_size: int) -> None:
        lora = getattr(request, "lora_request", None)
        self.lora = getattr(lora, "lora_name", None) if lora is not None else None
        self.salt = getattr(request, "cache_salt", None)
        self.mm = _mm_items(request)
        self.ok = self.mm is not None and getattr(request, "prompt_embeds", None) is None
        self.block_size = block_size
        self.hashes: List[bytes] = []

    def upto(self, tokens: List[int], n: int) -> List[bytes]:
        if n > len(self.hashes):  # recomputed from the start: the chain is cheap next to a forward pass
            self.hashes = block_hashes(tokens, self.block_size, self.lora, self.salt, self.mm or (), max_blocks=n)
        return self.hashes[:n]


# Steps a saved run is looked up again before its events are given up (saves are asynchronous).
CONFIRM_STEPS = 20


@dataclass
class _Tracked:
    request: Any
    block_ids: List[List[int]] = field(default_factory=list)  #: per KV-cache group
    saved_upto: int = 0


@dataclass
class _Run:
    """Blocks handed to the workers for saving, to be announced as KV events once the sidecar has them."""

    first: int
    keys: List[bytes]
    token_ids: List[int]
    vllm_hashes: List[Any]
    parent: Any
    lora_name: Optional[str]
    step: int
    tries: int = 0


def _event_hash(h: Any) -> Any:
    h = getattr(h, "hash_value", h)  # older vLLM: BlockHashType(hash_value, token_ids, extra_keys)
    if isinstance(h, (bytes, bytearray)) and os.environ.get("VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES", "1") != "0":
        return int.from_bytes(bytes(h), "big") & 0xFFFFFFFFFFFFFFFF
    return h


def tier_medium(tier: str) -> str:
    """Event medium for a kvstash tier: the DRAM tier is host memory ("CPU"), others are named in capitals."""
    return "CPU" if tier == "dram" else tier.upper()


def lease_tag(req_id: str) -> str:
    return "vllm:" + str(req_id)[:120]


class SchedulerSide:
    def __init__(self, settings: Any, block_size: int, namespaces: List[Dict[str, Any]], can_load: bool, can_save: bool,
                 events: bool = True, windows: Optional[List[Optional[int]]] = None,
                 block_bytes: int = 0) -> None:
        """``namespaces``: every (KV-cache group, rank) namespace, group 0's ranks first; ``windows``: per group,
        None for full attention or the blocks a sliding-window group needs before the hit end."""
        self.s = settings
        self.events = events
        self.windows: List[Optional[int]] = list(windows or [None])
        self.block_bytes = block_bytes  # one rank's stored block (load-or-recompute over the socket hop)
        self.rate = PrefillRate(getattr(settings, "prefill_tokens_per_s", 0.0))
        self.bs = block_size
        self.namespaces = namespaces
        self.can_load, self.can_save = can_load, can_save
        self.client = KvstashClient(settings.endpoint, timeout_ms=settings.lookup_timeout_ms, client_name="kvstash-vllm-scheduler",
                                    **settings.client_auth())
        self._ns: Optional[List[str]] = None
        self._down_until = 0.0
        self._last_warn = 0.0
        if can_load or events:  # at start-up, not on a step: a sidecar that is down or stalled costs this once
            self._register_at_start()
        self._chains: Dict[str, _Chain] = {}
        self._match: Dict[str, Tuple[int, int]] = {}
        self._tracked: Dict[str, _Tracked] = {}
        self._loads: List[LoadSpec] = []
        self._runs: List[_Run] = []
        self._step = 0
        self.counters = {"lookups": 0, "lookup_failures": 0, "asked_tokens": 0, "hit_tokens": 0, "saved_blocks_planned": 0,
                         "worker_disabled": 0, "event_lookups": 0}
        self.workers_disabled: Optional[str] = None
        self._events_pool: Optional[ThreadPoolExecutor] = None
        self._confirm: Optional[Future] = None
        self._ev_local = threading.local()
        self._last_report = time.monotonic()

    # ---- sidecar access ---------------------------------------------------------------------------------

    def _fail(self, err: Exception, what: str) -> None:
        self._down_until = time.monotonic() + self.s.retry_interval_ms / 1000.0
        now = time.monotonic()
        if now - self._last_warn > 60:
            self._last_warn = now
            log.warning("kvstash %s failed (%s); treating as a miss, retrying in %d ms", what, err, self.s.retry_interval_ms)

    def _available(self) -> bool:
        return time.monotonic() >= self._down_until

    def _register_at_start(self) -> None:
        """Wait up to 1 s for a connection (none: the sidecar is absent, lookups register later), then HELLO within
        5 s: a busy host's start-up must not leave the first lookups without namespaces."""
        until = time.monotonic() + max(self.s.lookup_timeout_ms, 1000.0) / 1000.0
        while not self.client.connected() and time.monotonic() < until:
            time.sleep(0.005)
        try:
            if self.client.connected():
                self._register(time.monotonic() + max(self.s.lookup_timeout_ms, 5000.0) / 1000.0)
        except Exception as err:  # a cache fault never breaks the engine: the first lookup tries again
            log.warning("kvstash: namespaces not registered at start-up (%s); lookups will try again", err)

    def _register(self, deadline: float) -> None:
        """HELLO every namespace (group and rank) by ``deadline``; the ids are kept once all are known."""
        self._ns = [self.client.namespace(d, timeout_ms=max(0.0, (deadline - time.monotonic()) * 1000.0)) for d in self.namespaces]

    def _lookup(self, keys: List[bytes], lease: Optional[str] = None, t0: Optional[float] = None) -> int:
        """Leading blocks worth loading. The deadline runs from ``t0`` (the hook's entry: hashing the prompt counts)
        and keeps RETURN_MARGIN_MS for giving up, so the whole hook answers within ``lookup_timeout_ms``."""
        if not self.client.connected():  # nothing could be sent: do not wait for the deadline
            raise E.KvstashError(E.UNAVAILABLE, f"no connection to {self.s.endpoint}")
        budget_ms = max(0.0, self.s.lookup_timeout_ms - RETURN_MARGIN_MS)
        deadline = (time.monotonic() if t0 is None else t0) + budget_ms / 1000.0
        left = lambda: max(0.0, (deadline - time.monotonic()) * 1000.0)  # noqa: E731
        if self._ns is None:  # start-up registration failed: within this lookup's deadline (issue 14: ≤ 50 ms a step)
            self._register(deadline)
        assert self._ns is not None
        lease_ms = self.s.lease_window_ms() if lease is not None else 0
        kw = {"lease": lease, "lease_ms": lease_ms} if lease is not None and lease_ms > 0 else {}
        hit = len(keys)
        for ns in self._ns:
            res = self.client.lookup(ns, keys, timeout_ms=left(), **kw)
            hop = 0.0 if self.client.arena_of(ns) is not None else float(getattr(self.s, "hop_bytes_per_s", 0.0))
            # only the leading blocks whose load beats recomputing them (kvstash.load_policy)
            hit = min(hit, worth_loading(res, list(res.tiers), self.bs, self.block_bytes, self.rate.tokens_per_s(), hop))
            if hit == 0:
                break
        return hit

    def _chain(self, request: Any) -> _Chain:
        c = self._chains.get(request.request_id)
        if c is None:
            c = self._chains[request.request_id] = _Chain(request, self.bs)
        return c

    # ---- vLLM scheduler hooks ---------------------------------------------------------------------------

    def get_num_new_matched_tokens(self, request: Any, num_computed_tokens: int) -> Tuple[int, bool]:
        t0 = time.monotonic()
        rid = request.request_id
        self._match.pop(rid, None)
        start = num_computed_tokens // self.bs
        tokens = request_tokens(request)
        n = max(0, (len(tokens) - 1) // self.bs)  # never the last token: vLLM must compute at least one
        self._match[rid] = (start, 0)
        chain = self._chain(request)
        if not self.can_load or not chain.ok or n <= start or not self._available() or self.workers_disabled:
            return 0, False
        self.counters["lookups"] += 1
        self.counters["asked_tokens"] += (n - start) * self.bs
        try:
            hit = self._lookup(chain.upto(tokens, n)[start:n], lease_tag(rid), t0)
        except Exception as err:  # a cache fault never breaks the engine
            self.counters["lookup_failures"] += 1
            self._fail(E.to_kvstash_error(err), "lookup")
            return 0, False
        self.counters["hit_tokens"] += hit * self.bs
        self._match[rid] = (start, hit)
        return hit * self.bs, bool(self.s.load_kv_async and hit > 0)

    def update_state_after_alloc(self, request: Any, blocks: Any, num_external_tokens: int) -> None:
        rid = request.request_id
        tr = self._tracked.get(rid)
        if tr is None:
            tr = self._tracked[rid] = _Tracked(request)
        m = self._match.pop(rid, None)
        if m is None:
            return  # second call of an asynchronous load, or no lookup happened
        start, hit = m
        tr.saved_upto = max(tr.saved_upto, start)
        k = min(hit, max(0, num_external_tokens) // self.bs)
        if k <= 0:
            return
        gids = group_ids(blocks.get_block_ids() if hasattr(blocks, "get_block_ids") else blocks, len(self.windows))
        k = len(gids[0][start : start + k])
        keys = self._chain(request).upto(request_tokens(request), start + k)[start:]
        lease = lease_tag(rid) if self.s.lease_window_ms() > 0 else None
        for g, window in enumerate(self.windows):
            pairs = list(zip(keys, gids[g][start : start + k]))
            if window is not None:  # a sliding-window group only needs the blocks inside its window
                pairs = [(key, b) for key, b in pairs[-window:] if b != NULL_BLOCK]
            if pairs:
                self._loads.append(LoadSpec(rid, [x for x, _ in pairs], [b for _, b in pairs], bool(self.s.load_kv_async), lease, g))
        tr.saved_upto = max(tr.saved_upto, start + k)

    def build_connector_meta(self, so: Any) -> KvstashConnectorMetadata:
        self._step += 1
        if time.monotonic() - self._last_report >= 60 and self.counters["lookups"]:
            self._last_report = time.monotonic()
            log.info("kvstash scheduler: %s", self.counters)
        md = KvstashConnectorMetadata(loads=self._loads)
        self._loads = []
        nst = dict(getattr(so, "num_scheduled_tokens", None) or {})
        self.rate.observe(sum(int(v) for v in nst.values()))
        for nr in getattr(so, "scheduled_new_reqs", None) or []:
            tr = self._tracked.get(nr.req_id)
            if tr is not None:
                tr.block_ids = group_ids(nr.block_ids, len(self.windows))
                self._plan_save(md, tr, int(nr.num_computed_tokens) + int(nst.get(nr.req_id, 0)))
        for rid, new_ids, computed, resumed in _cached_reqs(getattr(so, "scheduled_cached_reqs", None)):
            tr = self._tracked.get(rid)
            if tr is None:
                continue
            if resumed or not tr.block_ids:
                tr.block_ids = group_ids(new_ids, len(self.windows))
            elif new_ids is not None:
                for g, more in enumerate(group_ids(new_ids, len(self.windows))):
                    tr.block_ids[g].extend(more)
            self._plan_save(md, tr, int(computed) + int(nst.get(rid, 0)))
        md.preempted_req_ids = sorted(getattr(so, "preempted_req_ids", None) or [])
        return md

    def _plan_save(self, md: KvstashConnectorMetadata, tr: _Tracked, tokens_after: int) -> None:
        req = tr.request
        chain = self._chain(req)
        if not self.can_save or not chain.ok:
            return
        tokens = request_tokens(req)
        limit = min(tokens_after, len(tokens)) // self.bs
        if not self.s.save_generated:
            limit = min(limit, len(getattr(req, "prompt_token_ids", None) or tokens) // self.bs)
        pub = getattr(req, "num_publishable_block_hashes", None)
        if isinstance(pub, int):
            limit = min(limit, pub)
        limit = min(limit, len(tr.block_ids[0]) if tr.block_ids else 0)
        first = tr.saved_upto
        if limit <= first:
            return
        keys = chain.upto(tokens, limit)[first:limit]
        for g, window in enumerate(self.windows):
            pairs = [(key, b) for key, b in zip(keys, tr.block_ids[g][first:limit]) if window is None or b != NULL_BLOCK]
            if pairs:
                md.saves.append(SaveSpec(req.request_id, [x for x, _ in pairs], [b for _, b in pairs], g))
        self.counters["saved_blocks_planned"] += limit - first
        tr.saved_upto = limit
        if not self.events:
            return
        vh = list(getattr(req, "block_hashes", None) or [])
        lora = getattr(req, "lora_request", None)
        self._runs.append(_Run(first, keys, tokens[first * self.bs : limit * self.bs], vh[first:limit],
                               vh[first - 1] if 0 < first <= len(vh) else None,
                               getattr(lora, "lora_name", None) if lora is not None else None, self._step))

    def request_finished(self, request: Any, block_ids: Any) -> Tuple[bool, Optional[dict]]:
        rid = request.request_id
        self._tracked.pop(rid, None)
        self._chains.pop(rid, None)
        self._match.pop(rid, None)
        return False, None  # saves are copied to host memory before wait_for_save returns: free at once

    def update_connector_output(self, out: Any) -> None:
        """vLLM hands the workers' aggregated output here every step (``KVConnectorOutput``); kvstash reads
        ``kv_connector_worker_meta`` (KvstashWorkerMetadata) for workers that cannot load."""
        meta = getattr(out, "kv_connector_worker_meta", None)
        reasons = getattr(meta, "disabled", None)
        if reasons and not self.workers_disabled:
            self.workers_disabled = "; ".join(sorted(set(reasons)))
            self.counters["worker_disabled"] += 1
            log.error("kvstash: the workers cannot load (%s); answering 0 hits from now on", self.workers_disabled)

    def events_pending(self) -> bool:
        return bool(self._runs) or self._confirm is not None

    def take_events(self) -> List[Any]:
        """BlockStored events (vLLM's block hashes, medium per kvstash tier) for blocks saved in earlier steps
        that the sidecar now holds. Never waits: the LOOKUPs run on a background thread; this returns what it
        confirmed since the last call and hands it the runs now due. Runs not yet stored (the saver thread may
        lag behind the engine's steps) are retried for CONFIRM_STEPS steps, then forgotten."""
        if not self.events:
            return []
        out: List[Any] = []
        if self._confirm is not None and self._confirm.done():
            try:
                events, retry = self._confirm.result()
            except Exception:  # a cache fault never breaks the engine
                events, retry = [], []
            out.extend(events)
            self._runs = retry + self._runs
            self._confirm = None
        if self._confirm is None and self._ns is not None and self._available():
            ready = [r for r in self._runs if r.step < self._step]
            if ready:
                self._runs = [r for r in self._runs if r.step >= self._step]
                if self._events_pool is None:
                    self._events_pool = ThreadPoolExecutor(1, thread_name_prefix="kvstash-events")
                self._confirm = self._events_pool.submit(self._confirm_runs, ready, self._ns[0])
        return out

    def _ev_client(self) -> KvstashClient:
        c = getattr(self._ev_local, "client", None)
        if c is None:
            c = self._ev_local.client = KvstashClient(self.s.endpoint, timeout_ms=self.s.lookup_timeout_ms,
                                                      client_name="kvstash-vllm-events", **self.s.client_auth())
        return c

    def _confirm_runs(self, ready: List[_Run], ns: str) -> Tuple[List[Any], List[_Run]]:
        """Events thread: look the runs up (own client), return (events, runs to retry)."""
        out: List[Any] = []
        retry: List[_Run] = []
        c = self._ev_client()
        deadline = time.monotonic() + max(self.s.lookup_timeout_ms, 1000.0) / 1000.0
        try:
            for r in ready:
                left = max(0.0, (deadline - time.monotonic()) * 1000.0)
                self.counters["event_lookups"] += 1
                res = c.lookup(ns, r.keys, timeout_ms=left)
                if res.hit:
                    out.extend(self._events(c, ns, r, res.hit, res.tiers, left))
                if res.hit < len(r.keys) and r.tries < CONFIRM_STEPS:
                    retry.append(_Run(r.first + res.hit, r.keys[res.hit:], r.token_ids[res.hit * self.bs:],
                                      r.vllm_hashes[res.hit:], r.vllm_hashes[res.hit - 1] if res.hit and res.hit <= len(r.vllm_hashes) else r.parent,
                                      r.lora_name, r.step, r.tries + 1))
        except KvstashError as err:
            self._fail(err, "event confirmation")
        return out, retry

    def _events(self, c: KvstashClient, ns: str, r: _Run, n: int, tiers: Dict[str, int], timeout_ms: float) -> List[Any]:
        n = min(n, len(r.vllm_hashes))  # without vLLM's hashes for a block there is nothing to announce
        if n <= 0:
            return []
        held = {t: c for t, c in tiers.items() if c}
        if len(held) == 1:
            media = [tier_medium(next(iter(held)))] * n
        else:  # mixed tiers: ask per block (a one-key lookup names that block's fastest tier)
            media = []
            for k in r.keys[:n]:
                t = c.lookup(ns, [k], timeout_ms=timeout_ms).tiers
                media.append(tier_medium(next((x for x, c in t.items() if c), "dram")))
        out, i = [], 0
        while i < n:
            j = i
            while j < n and media[j] == media[i]:
                j += 1
            parent = r.vllm_hashes[i - 1] if i > 0 else r.parent
            out.append(make_block_stored(
                block_hashes=[_event_hash(h) for h in r.vllm_hashes[i:j]],
                parent_block_hash=_event_hash(parent) if parent is not None else None,
                token_ids=r.token_ids[i * self.bs : j * self.bs], block_size=self.bs, lora_id=None,
                medium=media[i], lora_name=r.lora_name))
            i = j
        return out

    def close(self) -> None:
        if self._events_pool is not None:
            def close_ev() -> None:
                c = getattr(self._ev_local, "client", None)
                if c is not None:
                    c.close()
            self._events_pool.submit(close_ev)
            self._events_pool.shutdown(wait=True)
        self.client.close()


def _cached_reqs(c: Any):
    """(req_id, new_block_ids, num_computed_tokens, resumed) for both forms of scheduled_cached_reqs."""
    if c is None:
        return
    if hasattr(c, "req_ids"):  # one object of parallel lists (newer vLLM)
        resumed_set = set(getattr(c, "resumed_req_ids", None) or ())
        flags = list(getattr(c, "resumed_from_preemption", None) or [])
        for i, rid in enumerate(c.req_ids):
            resumed = rid in resumed_set or (i < len(flags) and bool(flags[i]))
            yield rid, c.new_block_ids[i], c.num_computed_tokens[i], resumed
    else:  # a list of per-request objects (older vLLM)
        for x in c:
            yield x.req_id, getattr(x, "new_block_ids", None), x.num_computed_tokens, bool(getattr(x, "resumed_from_preemption", False))
