"""Worker-side half of the kvstash vLLM connector (role WORKER, one per GPU worker process).

Threads: the forward pass runs on vLLM's thread; a loader thread and a saver thread each own one
KvstashClient (clients are not shared between threads), so loads never queue behind large saves.

Loading (``start_load_kv`` → ``wait_for_layer_load`` per layer):
  ``start_load_kv`` asks the loader thread to GET every block of this step's loads, and returns. On the
  sidecar's host (the client attached to its shared-memory arena, kvstash.arena) the GET answers where the
  blocks lie: on CPU every ``wait_for_layer_load`` scatters straight from the arena (one strided view per run
  of consecutive slots, kvstash.arena_io), and the slots are checked once all layers are in (a slot reused
  meanwhile fails that block and the rest of its request); on GPUs the loader copies each run host→device in
  one DMA from the CUDA-registered arena, checks the slots, and the layers are scattered on the device.
  Otherwise (remote sidecar) the blocks come inline and are copied into one layer-major host buffer per
  request (pinned on GPUs). The first ``wait_for_layer_load``
  waits for that (at most ``load_timeout_ms`` after it was requested), and every
  ``wait_for_layer_load(layer)`` then scatters that layer's slice — one contiguous host→device copy — into
  the request's allocated block ids. A block that is missing, has the wrong size
  or did not arrive in time fails together with every later block of that request's load; failed block
  ids are reported by ``get_block_ids_with_load_errors`` in the same step, and the request's saves of this
  step are dropped (its other tokens were computed over unloaded KV). With ``load_kv_async`` the loader
  thread also scatters (on a side CUDA stream on GPUs, in inference mode: that mode is per thread, and
  in-place writes to inference tensors outside it fail), and the request is reported by ``get_finished``,
  with its failed blocks reported in that same pass.

Saving (``save_kv_layer`` per layer → ``wait_for_save``):
  ``save_kv_layer`` gathers this step's save blocks of that layer into a host buffer: on CPU directly in
  the stored block order (kvstash.kv_layout); on GPUs into a pinned layer-major buffer with one
  asynchronous copy per layer, transposed to the stored order later by the saver thread. ``wait_for_save``
  waits for those copies (vLLM may overwrite the blocks as soon as it returns) and hands the buffer to the
  saver thread, which copies each block into an arena slot and commits them (ALLOC/COMMIT; the GPU staging's
  layer-major order is transposed by that copy), or, with a remote sidecar, PUTs it zero-copy.
  A step whose layers were not all gathered is not saved (it would store partial blocks). When the saves
  waiting to be sent exceed ``max_pending_save_bytes`` new ones are dropped. With ``save_sync``
  (default for kv_producer) ``wait_for_save`` also waits for the PUTs, up to ``save_timeout_ms``.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Set

from .arena_io import slot_parts, store_blocks
from .client import PUT_PRESENT, PUT_STORED, ThreadLocalClients
from .errors import KvstashError
from .kv_layout import LayoutError, LayoutSpec, TensorLayout, detect_layout, dtype_name, gather_blocks, ordered_layers, scatter_blocks
from .vllm_metadata import LoadSpec
from .vllm_worker_arena import ArenaWorkerMixin

log = logging.getLogger("kvstash.vllm")
# Received frames are read-only; torch.frombuffer warns about that although we only read from them.
warnings.filterwarnings("ignore", message="The given buffer is not writable", category=UserWarning)


@dataclass
class _Load:
    spec: LoadSpec
    deadline: float
    future: Optional[Future] = None
    ok: int = 0
    host: Any = None  #: parts: [(first block, count, tensor (count, layers, *layer_shape))], host or device
    idx: Any = None
    lease: Any = None  #: the arena lease the parts read in place (CPU): checked and released after the scatter
    cancelled: bool = False


@dataclass
class _SaveStep:
    saves: list
    host: Any
    idx: Any
    gathered: Set[int] = field(default_factory=set)
    alloc: Any = None  #: CPU, same host: arena slots the layers are gathered into (committed at wait_for_save)
    dropped: Set[str] = field(default_factory=set)  #: requests whose load failed in this step: not saved
    parts: Any = None  #: [(first block, count, view (count, layers, *layer_shape))] of those slots


class WorkerSide(ArenaWorkerMixin):
    def __init__(self, settings: Any, spec: LayoutSpec, desc: Dict[str, Any], num_blocks: Optional[int], save_sync: bool) -> None:
        self.s, self.spec, self.desc = settings, spec, desc
        self.num_blocks, self.save_sync = num_blocks, save_sync
        self.disabled: Optional[str] = "register_kv_caches was not called"
        self.layers: List[str] = []
        self.index: Dict[str, int] = {}
        self.kv: Dict[str, Any] = {}
        self.layouts: Dict[str, TensorLayout] = {}
        self.cuda = False
        self.block_bytes = 0
        self.clients = ThreadLocalClients(settings.endpoint, timeout_ms=settings.load_timeout_ms, client_name="kvstash-vllm-worker",
                                         **settings.client_auth())
        self.loader = ThreadPoolExecutor(1, thread_name_prefix="kvstash-load")
        self.saver = ThreadPoolExecutor(1, thread_name_prefix="kvstash-save")
        self._lock = threading.Lock()
        self._scatter_lock = threading.Lock()
        self._counter_lock = threading.Lock()  # counters are bumped from the forward, loader and saver threads
        self._pending_bytes = 0
        self._save_futures: List[Future] = []
        self._sync: List[_Load] = []
        self._resolved = True
        self._scattered: Set[str] = set()
        self._failed_reqs: Set[str] = set()
        self._errors: Set[int] = set()
        self._async: Dict[str, _Load] = {}
        self._failed_async: Set[str] = set()  # asynchronous loads with failed blocks, for get_transfer_results
        self._save: Any = None
        self._side_stream: Any = None
        self._warned: Set[str] = set()
        self._down_until = 0.0  # after a failed save, skip saves (no gather, no host copy) until then
        self._last_report = time.monotonic()
        self._reported: Dict[str, int] = {}  # counters are logged at most once a minute
        self.counters = {"loaded_blocks": 0, "failed_blocks": 0, "saved_blocks": 0, "present_blocks": 0,
                         "dropped_blocks": 0, "save_errors": 0}

    def _count(self, name: str, n: int) -> None:
        with self._counter_lock:
            self.counters[name] += n

    def _warn_once(self, key: str, msg: str, *args: Any) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(msg, *args)

    # ---- registration -----------------------------------------------------------------------------------

    def register_kv_caches(self, kv_caches: Dict[str, Any]) -> None:
        try:
            layers = ordered_layers(kv_caches.keys())
            layouts = {}
            for name in layers:
                t = kv_caches[name]
                if dtype_name(t.dtype) != self.spec.dtype:
                    raise LayoutError(f"layer {name}: KV dtype {dtype_name(t.dtype)} but the config says {self.spec.dtype}")
                layouts[name] = detect_layout(t.shape, t.stride(), self.spec, self.num_blocks, self.s.kv_layout)
            if not layers:
                raise LayoutError("no KV-cache layers registered")
        except LayoutError as err:
            self.disabled = str(err)
            log.error("kvstash connector disabled on this worker (loads fail over to recompute, nothing is saved): %s", err)
            return
        dims = {lay.dim for lay in layouts.values()}
        if len(dims) > 1:
            self.disabled = f"layers disagree on the padded head dim ({sorted(dims)})"
            log.error("kvstash connector disabled on this worker (loads fail over to recompute, nothing is saved): %s", self.disabled)
            return
        if dims != {0}:  # per-token-head-scale cache: the stored block holds the whole padded row
            self.spec = dataclasses.replace(self.spec, head_size=dims.pop())
        self.layers, self.layouts = layers, layouts
        self.index = {n: i for i, n in enumerate(layers)}
        self.kv = {n: kv_caches[n] for n in layers}
        self.cuda = kv_caches[layers[0]].is_cuda
        self.block_bytes = len(layers) * self.spec.layer_bytes()
        self.disabled = None
        first = layouts[layers[0]]
        log.info("kvstash: %d layers, layout %s%s, %d blocks, %d bytes per stored block, namespace %s",
                 len(layers), first.kind, " (HND)" if first.hnd else "", first.num_blocks, self.block_bytes, self.desc)

    # ---- helpers ----------------------------------------------------------------------------------------

    def _host(self, n: int, layer_major: bool) -> Any:
        """Host buffer for n blocks: (layers, n, ...) when layer_major, else (n, layers, ...) = the stored order.
        On GPUs it is pinned and layer-major, so every per-layer copy is one contiguous asynchronous DMA."""
        import torch

        dt = next(iter(self.kv.values())).dtype
        lead = (len(self.layers), n) if layer_major else (n, len(self.layers))
        return torch.empty((*lead, *self.spec.layer_shape()), dtype=dt, pin_memory=self.cuda)

    def _idx(self, ids: List[int]) -> Any:
        import torch

        return torch.tensor(ids, dtype=torch.long, device=next(iter(self.kv.values())).device)

    def _fetch(self, keys: List[bytes], deadline: float) -> List[Optional[memoryview]]:
        left = (deadline - time.monotonic()) * 1000.0
        if left <= 0:
            raise KvstashError("KVS_TIMEOUT", "load deadline passed before the request was sent")
        c = self.clients.get()
        ns = c.namespace(self.desc, timeout_ms=left)
        return c.get_many(ns, keys, timeout_ms=max(0.0, (deadline - time.monotonic()) * 1000.0))

    def _fetch_to_host(self, ld: _Load) -> tuple:
        """Loader thread: GET the blocks; returns (ok, parts, idx, lease) for the leading good ones, applied by the
        caller only if it came in time. Same-host: the parts are views of the arena (CPU: read in place, the lease
        is checked after the scatter; GPU: one host→device DMA per run, checked here). Else inline frames, copied
        into one layer-major host buffer."""
        import torch

        try:
            got = self._fetch_arena(ld)
            if got is not None:
                return got
            bufs = self._fetch(ld.spec.keys, ld.deadline)
        except Exception as err:
            self._warn_once("load-" + type(err).__name__, "kvstash: load failed (%s); recomputing", err)
            return 0, None, None, None
        ok = self._leading_ok([None if b is None else memoryview(b).nbytes for b in bufs])
        if not ok:
            return 0, None, None, None
        host = self._host(ok, layer_major=True)
        dt, shape = host.dtype, (len(self.layers), *self.spec.layer_shape())
        for i in range(ok):
            host[:, i].copy_(torch.frombuffer(bufs[i], dtype=torch.uint8).view(dt).view(shape))
        return ok, [(0, ok, host.transpose(0, 1))], self._idx(ld.spec.block_ids[:ok]), None

    def _leading_ok(self, sizes: List[Optional[int]]) -> int:
        ok = 0
        for n in sizes:
            if n is None or n < 0 or n != self.block_bytes:
                if n is not None and n >= 0:
                    self._warn_once("size", "kvstash: stored block of %d bytes, expected %d; treated as a miss", n, self.block_bytes)
                break
            ok += 1
        return ok

    def _scatter_layer(self, ld: _Load, li: int, name: str) -> None:
        for first, count, v in ld.host:
            if first >= ld.ok:
                break
            n = min(count, ld.ok - first)
            scatter_blocks(self.kv[name], self.layouts[name], ld.idx[first : first + n], v[:n, li])

    def _failed(self, ld: _Load) -> List[int]:
        return list(ld.spec.block_ids[ld.ok:])

    # ---- loading ----------------------------------------------------------------------------------------

    def start_load_kv(self, md: Any) -> None:
        self._settle_sync()  # a step whose layers were not all waited for still settles its leases
        self._sync, self._resolved, self._scattered, self._failed_reqs = [], True, set(), set()
        for spec in getattr(md, "loads", None) or []:
            ld = _Load(spec, time.monotonic() + self.s.load_timeout_ms / 1000.0)
            if self.disabled:
                f: Future = Future()
                f.set_result(list(spec.block_ids))
                ld.future = f
                if spec.is_async:
                    self._async[spec.req_id] = ld
                else:
                    self._errors.update(spec.block_ids)
                    self._failed_reqs.add(spec.req_id)
                continue
            if spec.is_async:
                ld.future = self.loader.submit(self._async_load, ld)
                self._async[spec.req_id] = ld
            else:
                ld.future = self.loader.submit(self._fetch_to_host, ld)
                self._sync.append(ld)
                self._resolved = False

    def _resolve(self) -> None:
        self._resolved = True
        for ld in self._sync:
            try:  # the loader's own deadline is the same; the margin covers copying the last frames to host
                ld.ok, ld.host, ld.idx, ld.lease = ld.future.result(timeout=max(0.0, ld.deadline - time.monotonic()) + 0.5)  # type: ignore[union-attr]
            except FutureTimeout:
                ld.future.cancel()  # type: ignore[union-attr]
                self._warn_once("load-timeout", "kvstash: load timed out after %d ms; recomputing", self.s.load_timeout_ms)
            except Exception as err:
                self._warn_once("load-" + type(err).__name__, "kvstash: load failed (%s); recomputing", err)
            if ld.lease is None:
                self._account(ld)
            elif self._failed(ld):  # counted at the settle; its saves of this step are dropped from now on
                self._failed_reqs.add(ld.spec.req_id)
        self._release_leases(self._sync)

    def _account(self, ld: _Load) -> None:
        failed = self._failed(ld)
        self._count("loaded_blocks", ld.ok)
        if failed:
            self._count("failed_blocks", len(failed))
            self._errors.update(failed)
            self._failed_reqs.add(ld.spec.req_id)

    def wait_for_layer_load(self, layer_name: str) -> None:
        if not self._sync:
            return
        if not self._resolved:
            self._resolve()
        li = self.index.get(layer_name)
        if li is None or layer_name in self._scattered:
            return
        for ld in self._sync:
            if ld.ok:
                self._scatter_layer(ld, li, layer_name)
        self._scattered.add(layer_name)
        if len(self._scattered) == len(self.layers):
            self._settle_sync()

    def _async_load(self, ld: _Load) -> List[int]:
        ld.ok, ld.host, ld.idx, ld.lease = self._fetch_to_host(ld)
        if ld.ok:
            import torch

            with self._scatter_lock, torch.inference_mode():  # per thread; the KV tensors may be inference tensors
                if ld.cancelled:
                    ld.ok = 0
                    self._settle(ld)
                    return list(ld.spec.block_ids)
                if self.cuda:
                    if self._side_stream is None:
                        self._side_stream = torch.cuda.Stream(device=ld.idx.device)
                    with torch.cuda.stream(self._side_stream):
                        self._scatter_all(ld)
                    self._side_stream.synchronize()
                else:
                    self._scatter_all(ld)
                self._settle(ld)
        return self._failed(ld)

    def _scatter_all(self, ld: _Load) -> None:
        for li, name in enumerate(self.layers):
            self._scatter_layer(ld, li, name)

    def _release_leases(self, loads: List[_Load]) -> None:
        """The loads are done: release the leases their lookups took (one empty LOOKUP with lease_ms 0 per
        tag), on the loader thread after its current job; a failure only lets the lease run to its expiry."""
        tags = [ld.spec.lease for ld in loads if getattr(ld.spec, "lease", None)]
        if not tags:
            return

        def release() -> None:
            try:
                c = self.clients.get()
                ns = c.namespace(self.desc, timeout_ms=self.s.load_timeout_ms)
                for t in tags:
                    c.lookup(ns, b"", lease=t, lease_ms=0, timeout_ms=self.s.load_timeout_ms)
            except Exception as err:
                self._warn_once("lease-" + type(err).__name__, "kvstash: lease release failed (%s); it expires by itself", err)

        try:
            self.loader.submit(release)
        except RuntimeError:  # shut down
            pass

    def build_connector_worker_meta(self) -> Any:
        """Tell the scheduler, every step, that this worker cannot load (vLLM base.py @ 003df29:
        ``build_connector_worker_meta`` → aggregated → scheduler ``update_connector_output``)."""
        if not self.disabled:
            return None
        from .vllm_metadata import KvstashWorkerMetadata

        return KvstashWorkerMetadata([self.disabled])

    def get_transfer_results(self, finished_req_ids: Set[str]) -> Any:
        """Newest vLLM (base.py @ 7ba3df63): finished and failed asynchronous loads in one object; failed
        receives are in ``finished_recving`` and ``failed_recving``. Their failed block ids stay available to
        ``get_block_ids_with_load_errors`` in the same pass."""
        from .vllm_compat import KVConnectorTransferResults

        _sending, done = self.get_finished(finished_req_ids)
        failed = set(self._failed_async)
        self._failed_async = set()
        return KVConnectorTransferResults(finished_sending=set(), finished_recving=set(done or ()), failed_recving=failed)

    def get_finished(self, finished_req_ids: Set[str]) -> "tuple[Optional[Set[str]], Optional[Set[str]]]":
        done: Set[str] = set()
        for rid, ld in list(self._async.items()):
            if not ld.future.done():  # type: ignore[union-attr]
                continue
            try:
                failed = ld.future.result()  # type: ignore[union-attr]
            except Exception:
                failed = list(ld.spec.block_ids)
            self._count("loaded_blocks", len(ld.spec.block_ids) - len(failed))
            self._count("failed_blocks", len(failed))
            self._errors.update(failed)
            if failed:
                self._failed_async.add(rid)
            done.add(rid)
            del self._async[rid]
            self._release_leases([ld])
        return None, (done or None)

    def get_block_ids_with_load_errors(self) -> Set[int]:
        out, self._errors = self._errors, set()
        return out

    def handle_preemptions(self, arg: Any) -> None:
        if isinstance(arg, (set, frozenset, list, tuple)):
            ids = set(arg)
        else:
            ids = set(getattr(arg, "preempted_req_ids", None) or ())
        hit = [self._async[r] for r in ids if r in self._async]
        for ld in hit:
            ld.cancelled = True
        if hit:
            with self._scatter_lock:  # a scatter in progress finishes before vLLM reuses the blocks
                pass

    # ---- saving -----------------------------------------------------------------------------------------

    def save_kv_layer(self, md: Any, layer_name: str) -> None:
        li = self.index.get(layer_name)
        if self.disabled or li is None or md is None:
            return
        if self._save is None:
            if self._sync and not self._resolved:
                self._resolve()
            saves = [s for s in getattr(md, "saves", None) or [] if s.block_ids and s.req_id not in self._failed_reqs]
            n = sum(len(s.block_ids) for s in saves)
            self._save = False
            if n == 0:
                return
            if time.monotonic() < self._down_until:
                self._count("dropped_blocks", n)
                return
            with self._lock:
                if self._pending_bytes + n * self.block_bytes > self.s.max_pending_save_bytes:
                    self._count("dropped_blocks", n)
                    self._warn_once("backlog", "kvstash: save backlog over %d bytes; dropping saves", self.s.max_pending_save_bytes)
                    return
                self._pending_bytes += n * self.block_bytes
            idx = self._idx([b for s in saves for b in s.block_ids])
            al = None if self.cuda else self._alloc_in_place(saves, n)
            if al is not None:
                dt = next(iter(self.kv.values())).dtype
                self._save = _SaveStep(saves, None, idx, alloc=al, parts=slot_parts(al, n, self.block_bytes, dt, (len(self.layers), *self.spec.layer_shape())))
            else:
                self._save = _SaveStep(saves, self._host(n, layer_major=self.cuda), idx)
        if self._save is False:
            return
        st = self._save
        if st.parts is not None:  # straight into the arena slots, one strided view per run of slots
            for first, count, v in st.parts:
                gather_blocks(self.kv[layer_name], self.layouts[layer_name], st.idx[first : first + count], v[:, li])
        else:
            dst = st.host[li] if self.cuda else st.host[:, li]
            gather_blocks(self.kv[layer_name], self.layouts[layer_name], st.idx, dst, non_blocking=self.cuda)
        st.gathered.add(li)

    def _report(self) -> None:
        now = time.monotonic()
        if now - self._last_report >= 60 and self.counters != self._reported:
            self._last_report, self._reported = now, dict(self.counters)
            log.info("kvstash worker: %s", self.counters)

    def wait_for_save(self) -> None:
        self._report()
        if self._sync:
            if not self._resolved:
                self._resolve()
            missing = [n for n in self.layers if n not in self._scattered]
            if missing:
                self._warn_once("no-layer-wait", "kvstash: wait_for_layer_load was not called for %d layers; loading them now", len(missing))
                for n in missing:
                    self.wait_for_layer_load(n)
        st, self._save = self._save, None
        if not st:
            return
        st.dropped = {sv.req_id for sv in st.saves if sv.req_id in self._failed_reqs}  # slots found reused at the settle
        if self.cuda:
            import torch

            torch.cuda.current_stream().synchronize()  # the gathers are done: vLLM may reuse the blocks
        if len(st.gathered) != len(self.layers):
            self._warn_once("partial-save", "kvstash: save_kv_layer ran for %d of %d layers; not saving", len(st.gathered), len(self.layers))
            if st.alloc is not None:
                self._commit_in_place(st, complete=False)
            else:
                self._release(st.idx.numel() * self.block_bytes)  # the step's blocks (host.shape[0] is the layers on GPUs)
            return
        if st.alloc is not None:  # CPU, same host: the bytes are in the slots already
            self._commit_in_place(st, complete=True)
            return
        deadline = time.monotonic() + self.s.save_timeout_ms / 1000.0
        fut = self.saver.submit(self._put_step, st, deadline)
        self._save_futures = [f for f in self._save_futures if not f.done()] + [fut]
        if self.save_sync:
            self._wait([fut], deadline)

    def _put_step(self, st: _SaveStep, deadline: float) -> None:
        """Saver thread: one step's blocks in stored order (a layer-major GPU staging buffer is transposed
        here, off the forward thread), one pipelined PUT batch per request."""
        import torch

        host = st.host.transpose(0, 1) if self.cuda else st.host
        arena = self._arena_client()
        if arena is None and self.cuda:
            host = host.contiguous()
        off = 0
        for s in st.saves:
            n = len(s.block_ids)
            if s.req_id in st.dropped:
                self._count("dropped_blocks", n)
                self._release(n * self.block_bytes)
            elif arena is not None:  # same host: copied straight into arena slots (the transpose happens in that copy)
                self._put(s.keys, [host[off + i] for i in range(n)], deadline, arena)
            else:
                self._put(s.keys, [host[off + i].reshape(-1).view(torch.uint8).numpy() for i in range(n)], deadline)
            off += n

    def _release(self, nbytes: int) -> None:
        with self._lock:
            self._pending_bytes -= nbytes

    def _put(self, keys: List[bytes], blocks: List[Any], deadline: float, arena: Any = None) -> None:
        import torch

        try:
            left = (deadline - time.monotonic()) * 1000.0
            if left <= 0:
                raise KvstashError("KVS_TIMEOUT", "save deadline passed while queued")
            res = store_blocks(arena[0], arena[1], keys, blocks, left) if arena is not None else None
            if res is None:
                if arena is not None:  # the arena went away (sidecar restart): inline frames
                    blocks = [b.contiguous().reshape(-1).view(torch.uint8).numpy() for b in blocks]
                c = self.clients.get()
                ns = c.namespace(self.desc, timeout_ms=left)
                res = c.put_many(ns, keys, blocks, timeout_ms=max(0.0, (deadline - time.monotonic()) * 1000.0))
            self._count("saved_blocks", sum(1 for r in res if r == PUT_STORED))
            self._count("present_blocks", sum(1 for r in res if r == PUT_PRESENT))
            self._count("dropped_blocks", sum(1 for r in res if r not in (PUT_STORED, PUT_PRESENT)))
        except Exception as err:
            if getattr(err, "code", None) in ("KVS_UNAVAILABLE", "KVS_TIMEOUT"):
                self._down_until = time.monotonic() + self.s.retry_interval_ms / 1000.0
            self._count("save_errors", 1)
            self._count("dropped_blocks", len(keys))
            self._warn_once("save-" + type(err).__name__, "kvstash: save failed (%s); dropped (it is a cache)", err)
        finally:
            self._release(len(keys) * self.block_bytes)

    @staticmethod
    def _wait(futs: List[Future], deadline: float) -> None:
        for f in futs:
            try:
                f.result(timeout=max(0.0, deadline - time.monotonic()))
            except Exception:
                pass

    def shutdown(self) -> None:
        """Send the saves already handed off (up to save_timeout_ms), then stop the threads."""
        self._wait(self._save_futures, time.monotonic() + self.s.save_timeout_ms / 1000.0)
        for f in self._save_futures:
            f.cancel()
        for ld in list(self._async.values()) + self._sync:
            if ld.future is not None:
                ld.future.cancel()
        for ex in (self.saver, self.loader):  # each thread closes its own client; running jobs end by their deadlines
            ex.submit(self.clients.close_current)
            ex.shutdown(wait=True)
        self.clients.close_all()
        log.info("kvstash worker counters: %s", self.counters)
