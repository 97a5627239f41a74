"""Worker-side half of the kvstash vLLM connector (role WORKER, one per GPU worker process).

Threads: the forward pass runs on vLLM's thread; a loader thread and a saver thread each own one
KvstashClient (clients are not shared between threads), so loads never queue behind large saves.

Loading (``start_load_kv`` → ``wait_for_layer_load`` per layer):
  ``start_load_kv`` asks the loader thread to GET every block of this step's loads and to copy them into
  one layer-major host buffer per request (pinned on GPUs), and returns. The first ``wait_for_layer_load``
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
  saver thread, which PUTs it zero-copy.
  A step whose layers were not all gathered is not saved (it would store partial blocks). When the saves
  waiting to be sent exceed ``max_pending_save_bytes`` new ones are dropped. With ``save_sync``
  (default for kv_producer) ``wait_for_save`` also waits for the PUTs, up to ``save_timeout_ms``.
"""
from __future__ import annotations

import logging
import threading
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Set

from .client import PUT_PRESENT, PUT_STORED, ThreadLocalClients
from .errors import KvstashError
from .kv_layout import LayoutError, LayoutSpec, TensorLayout, detect_layout, dtype_name, gather_blocks, ordered_layers, scatter_blocks
from .vllm_metadata import LoadSpec

log = logging.getLogger("kvstash.vllm")
# Received frames are read-only; torch.frombuffer warns about that although we only read from them.
warnings.filterwarnings("ignore", message="The given buffer is not writable", category=UserWarning)


@dataclass
class _Load:
    spec: LoadSpec
    deadline: float
    future: Optional[Future] = None
    ok: int = 0
    host: Any = None
    idx: Any = None
    cancelled: bool = False


@dataclass
class _SaveStep:
    saves: list
    host: Any
    idx: Any
    gathered: Set[int] = field(default_factory=set)


class WorkerSide:
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
        """Loader thread: GET the blocks and copy the leading good ones into a layer-major host buffer.
        Returns (ok, host, idx); the caller applies it only if it came in time."""
        import torch

        try:
            bufs = self._fetch(ld.spec.keys, ld.deadline)
        except Exception as err:
            self._warn_once("load-" + type(err).__name__, "kvstash: load failed (%s); recomputing", err)
            return 0, None, None
        ok = 0
        for b in bufs:
            if b is None or memoryview(b).nbytes != self.block_bytes:
                if b is not None:
                    self._warn_once("size", "kvstash: stored block of %d bytes, expected %d; treated as a miss", memoryview(b).nbytes, self.block_bytes)
                break
            ok += 1
        if not ok:
            return 0, None, None
        host = self._host(ok, layer_major=True)
        dt, shape = host.dtype, (len(self.layers), *self.spec.layer_shape())
        for i in range(ok):
            host[:, i].copy_(torch.frombuffer(bufs[i], dtype=torch.uint8).view(dt).view(shape))
        return ok, host, self._idx(ld.spec.block_ids[:ok])

    def _failed(self, ld: _Load) -> List[int]:
        return list(ld.spec.block_ids[ld.ok:])

    # ---- loading ----------------------------------------------------------------------------------------

    def start_load_kv(self, md: Any) -> None:
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
                ld.ok, ld.host, ld.idx = ld.future.result(timeout=max(0.0, ld.deadline - time.monotonic()) + 0.5)  # type: ignore[union-attr]
            except FutureTimeout:
                ld.future.cancel()  # type: ignore[union-attr]
                self._warn_once("load-timeout", "kvstash: load timed out after %d ms; recomputing", self.s.load_timeout_ms)
            except Exception as err:
                self._warn_once("load-" + type(err).__name__, "kvstash: load failed (%s); recomputing", err)
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
                scatter_blocks(self.kv[layer_name], self.layouts[layer_name], ld.idx, ld.host[li])
        self._scattered.add(layer_name)

    def _async_load(self, ld: _Load) -> List[int]:
        ld.ok, ld.host, ld.idx = self._fetch_to_host(ld)
        if ld.ok:
            import torch

            with self._scatter_lock, torch.inference_mode():  # per thread; the KV tensors may be inference tensors
                if ld.cancelled:
                    ld.ok = 0
                    return list(ld.spec.block_ids)
                if self.cuda:
                    if self._side_stream is None:
                        self._side_stream = torch.cuda.Stream(device=ld.idx.device)
                    with torch.cuda.stream(self._side_stream):
                        self._scatter_all(ld)
                    self._side_stream.synchronize()
                else:
                    self._scatter_all(ld)
        return self._failed(ld)

    def _scatter_all(self, ld: _Load) -> None:
        for li, name in enumerate(self.layers):
            scatter_blocks(self.kv[name], self.layouts[name], ld.idx, ld.host[li])

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
            done.add(rid)
            del self._async[rid]
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
            self._save = _SaveStep(saves, self._host(n, layer_major=self.cuda), self._idx([b for s in saves for b in s.block_ids]))
        if self._save is False:
            return
        st = self._save
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
        if self.cuda:
            import torch

            torch.cuda.current_stream().synchronize()  # the gathers are done: vLLM may reuse the blocks
        if len(st.gathered) != len(self.layers):
            self._warn_once("partial-save", "kvstash: save_kv_layer ran for %d of %d layers; not saving", len(st.gathered), len(self.layers))
            self._release(st.idx.numel() * self.block_bytes)  # the step's blocks (host.shape[0] is the layers on GPUs)
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

        host = st.host.transpose(0, 1).contiguous() if self.cuda else st.host
        off = 0
        for s in st.saves:
            n = len(s.block_ids)
            blocks = [host[off + i].reshape(-1).view(torch.uint8).numpy() for i in range(n)]
            off += n
            self._put(s.keys, blocks, deadline)

    def _release(self, nbytes: int) -> None:
        with self._lock:
            self._pending_bytes -= nbytes

    def _put(self, keys: List[bytes], blocks: List[Any], deadline: float) -> None:
        try:
            left = (deadline - time.monotonic()) * 1000.0
            if left <= 0:
                raise KvstashError("KVS_TIMEOUT", "save deadline passed while queued")
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
