"""Scheduler-side half of the kvstash vLLM connector (role SCHEDULER, in vLLM's EngineCore process).

- Keys are kvstash canonical block hashes computed here from the request's token ids, LoRA name and cache
  salt (and multimodal items where the request carries them) — not ``request.block_hashes``: vLLM's own
  hashes start from a random seed in every process unless PYTHONHASHSEED is fixed, so they cannot be
  storage keys that survive restarts and match across hosts (docs/architecture.md "Block identity").
  vLLM's hashes are used only in the KV events this side announces, so routers can match them.
- ``lookup`` asks the sidecar, within ``lookup_timeout_ms``, how many leading blocks it holds in every
  tensor/pipeline-parallel rank's namespace and takes the minimum. Timeout or error → 0 tokens, and lookups
  are skipped for ``retry_interval_ms`` (the sidecar being down costs one deadline, not one per request).
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
import time
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


def request_tokens(request: Any) -> List[int]:
    toks = getattr(request, "all_token_ids", None)
    if toks is None:
        toks = getattr(request, "prompt_token_ids", None) or []
    return list(toks)


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
    block_ids: List[int] = field(default_factory=list)
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


class SchedulerSide:
    def __init__(self, settings: Any, block_size: int, namespaces: List[Dict[str, Any]], can_load: bool, can_save: bool,
                 block_bytes: int = 0) -> None:
        self.s = settings
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
        self._chains: Dict[str, _Chain] = {}
        self._match: Dict[str, Tuple[int, int]] = {}
        self._tracked: Dict[str, _Tracked] = {}
        self._loads: List[LoadSpec] = []
        self._runs: List[_Run] = []
        self._step = 0
        self.counters = {"lookups": 0, "lookup_failures": 0, "asked_tokens": 0, "hit_tokens": 0, "saved_blocks_planned": 0}
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

    def _lookup(self, keys: List[bytes]) -> int:
        deadline = time.monotonic() + self.s.lookup_timeout_ms / 1000.0
        left = lambda: max(0.0, (deadline - time.monotonic()) * 1000.0)  # noqa: E731
        if self._ns is None:
            self._ns = [self.client.namespace(d, timeout_ms=left()) for d in self.namespaces]
        hit = len(keys)
        for ns in self._ns:
            res = self.client.lookup(ns, keys, timeout_ms=left())
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
        rid = request.request_id
        self._match.pop(rid, None)
        start = num_computed_tokens // self.bs
        tokens = request_tokens(request)
        n = max(0, (len(tokens) - 1) // self.bs)  # never the last token: vLLM must compute at least one
        self._match[rid] = (start, 0)
        chain = self._chain(request)
        if not self.can_load or not chain.ok or n <= start or not self._available():
            return 0, False
        self.counters["lookups"] += 1
        self.counters["asked_tokens"] += (n - start) * self.bs
        try:
            hit = self._lookup(chain.upto(tokens, n)[start:n])
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
        ids = group0(blocks.get_block_ids() if hasattr(blocks, "get_block_ids") else blocks)[start : start + k]
        k = len(ids)
        keys = self._chain(request).upto(request_tokens(request), start + k)[start:]
        self._loads.append(LoadSpec(rid, keys, ids, bool(self.s.load_kv_async)))
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
                tr.block_ids = group0(nr.block_ids)
                self._plan_save(md, tr, int(nr.num_computed_tokens) + int(nst.get(nr.req_id, 0)))
        for rid, new_ids, computed, resumed in _cached_reqs(getattr(so, "scheduled_cached_reqs", None)):
            tr = self._tracked.get(rid)
            if tr is None:
                continue
            if resumed:
                tr.block_ids = group0(new_ids)
            elif new_ids is not None:
                tr.block_ids.extend(group0(new_ids))
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
        limit = min(limit, len(tr.block_ids))
        first = tr.saved_upto
        if limit <= first:
            return
        keys = chain.upto(tokens, limit)[first:limit]
        md.saves.append(SaveSpec(req.request_id, keys, tr.block_ids[first:limit]))
        self.counters["saved_blocks_planned"] += limit - first
        tr.saved_upto = limit
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

    def take_events(self) -> List[Any]:
        """BlockStored events (vLLM's block hashes, medium per kvstash tier) for blocks saved in earlier
        steps that the sidecar now holds. Runs not yet stored (the saver thread may lag behind the engine's steps)
        are retried for CONFIRM_STEPS steps, then forgotten."""
        ready = [r for r in self._runs if r.step < self._step]
        if not ready or not self._available() or self._ns is None:
            return []
        self._runs = [r for r in self._runs if r.step >= self._step]
        out: List[Any] = []
        deadline = time.monotonic() + self.s.lookup_timeout_ms / 1000.0
        try:
            for r in ready:
                left = max(0.0, (deadline - time.monotonic()) * 1000.0)
                res = self.client.lookup(self._ns[0], r.keys, timeout_ms=left)
                if res.hit:
                    out.extend(self._events(r, res.hit, res.tiers, left))
                if res.hit < len(r.keys) and r.tries < CONFIRM_STEPS:
                    self._runs.append(_Run(r.first + res.hit, r.keys[res.hit:], r.token_ids[res.hit * self.bs:],
                                           r.vllm_hashes[res.hit:], r.vllm_hashes[res.hit - 1] if res.hit and res.hit <= len(r.vllm_hashes) else r.parent,
                                           r.lora_name, r.step, r.tries + 1))
        except KvstashError as err:
            self._fail(err, "event confirmation")
        return out

    def _events(self, r: _Run, n: int, tiers: Dict[str, int], timeout_ms: float) -> List[Any]:
        n = min(n, len(r.vllm_hashes))  # without vLLM's hashes for a block there is nothing to announce
        if n <= 0:
            return []
        held = {t: c for t, c in tiers.items() if c}
        if len(held) == 1:
            media = [tier_medium(next(iter(held)))] * n
        else:  # mixed tiers: ask per block (a one-key lookup names that block's fastest tier)
            media = []
            for k in r.keys[:n]:
                t = self.client.lookup(self._ns[0], [k], timeout_ms=timeout_ms).tiers  # type: ignore[index]
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
