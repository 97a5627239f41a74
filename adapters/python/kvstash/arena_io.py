"""Engine-side transfers through the same-host arena (kvstash.arena), shared by the vLLM worker and SGLang.

- ``leading_parts`` turns a lease GET's answer into torch views, one per run of blocks that lie at one constant
  stride in the arena (blocks saved together are consecutive slots), so a layer of a whole run is ONE strided
  view: the engine scatters it straight into its paged KV cache, with no staging copy and no per-block loop on
  the host. On a GPU the run is first copied host→device in one DMA from the CUDA-registered arena (headers
  included: they are skipped by the strides), then scattered on the device.
- ``check_prefix`` applies the arena's rule AFTER the copy: the leading blocks whose slots still hold the same
  key and generation count; from the first one that does not, everything is a load error (recompute).
- ``store_blocks`` saves through ALLOC → copy into the slots → COMMIT; ``None`` means "use inline PUT".
"""
from __future__ import annotations

import time
from typing import Any, List, Optional, Sequence, Tuple

from .arena import LeasedGet

Part = Tuple[int, int, Any]  # (first block index, block count, tensor (count, *block_shape))


def runs(slots: Sequence[Any], n: int) -> List[Tuple[int, int, int]]:
    """(start, count, stride in bytes) for the first n slots, each run at one constant positive stride."""
    out: List[Tuple[int, int, int]] = []
    i = 0
    while i < n:
        j, stride = i + 1, 0
        while j < n:
            d = slots[j][0] - slots[j - 1][0]
            if d <= 0 or (stride and d != stride):
                break
            stride, j = d, j + 1
        out.append((i, j - i, stride))
        i = j
    return out


def _contiguous_strides(shape: Sequence[int]) -> List[int]:
    st, acc = [], 1
    for d in reversed(shape):
        st.append(acc)
        acc *= d
    return list(reversed(st))


def _present_runs(slots: Sequence[Any], n: int):
    """(first, count, stride, offset) of each run of slots (at one stride) among the first n; None entries are skipped."""
    i = 0
    while i < n:
        if slots[i] is None:
            i += 1
            continue
        j = i
        while j < n and slots[j] is not None:
            j += 1
        for start, count, stride in runs(slots[i:j], j - i):
            yield i + start, count, stride, slots[i + start][0]
        i = j


def _run_view(src: Any, count: int, stride: int, dtype: Any, shape: Sequence[int]) -> Any:
    """(count, *shape) view of dtype over a uint8 span holding `count` blocks `stride` bytes apart."""
    import torch

    item = torch.empty((), dtype=dtype).element_size()
    return src.view(dtype).as_strided((count, *shape), ((stride // item) if count > 1 else 0, *_contiguous_strides(shape)))


def leading_parts(lg: LeasedGet, n: int, block_bytes: int, dtype: Any, shape: Sequence[int], device: Any = None) -> List[Part]:
    """Views of the first n blocks of a lease GET (all present, of block_bytes each), grouped into runs.
    ``device`` (a CUDA device) copies each run to that device first; None reads the arena in place."""
    import torch

    arena = lg.arena.tensor()
    parts: List[Part] = []
    for first, count, stride, off in _present_runs(lg.slots, n):
        src = arena[off : off + (count - 1) * stride + block_bytes]
        if device is not None:
            lg.arena.register_cuda(off, src.numel())
            src = src.to(device, non_blocking=True)
        parts.append((first, count, _run_view(src, count, stride, dtype, shape)))
    for i in range(n):  # came inline (DRAM could not take it): a run of one over its frame
        if lg.slots[i] is None:
            v = torch.frombuffer(lg.inline[i], dtype=torch.uint8)  # type: ignore[arg-type]
            parts.append((i, 1, _run_view(v.to(device, non_blocking=True) if device is not None else v, 1, 0, dtype, shape)))
    return sorted(parts, key=lambda p: p[0])


def slot_parts(al: Any, n: int, block_bytes: int, dtype: Any, shape: Sequence[int]) -> List[Part]:
    """Writable views of an ALLOC's slots, one per run at one stride; keys without a slot are left out."""
    arena = al.arena.tensor()
    return [(first, count, _run_view(arena[off : off + (count - 1) * stride + block_bytes], count, stride, dtype, shape))
            for first, count, stride, off in _present_runs(al.slots, n)]


def check_prefix(lg: LeasedGet, n: int) -> int:
    """How many of the first n blocks are still valid after they were copied (arena rule: copy, then check)."""
    for i in range(n):
        if not lg.valid(i):
            return i
    return n


def store_blocks(client: Any, ns: str, keys: Sequence[bytes], blocks: Sequence[Any], timeout_ms: float) -> Optional[List[int]]:
    """Save tensors (any strides: the copy into the slot lays them out in stored order) through ALLOC/COMMIT; a
    PUT result per key, or None (not attached: use PUT)."""
    deadline = time.monotonic() + timeout_ms / 1000.0
    nbytes = [int(b.numel()) * b.element_size() for b in blocks]
    al = client.alloc(ns, b"".join(bytes(k) for k in keys), nbytes, timeout_ms=timeout_ms)
    if al is None:
        return None
    arena = al.arena.tensor()
    written = []
    for i, b in enumerate(blocks):
        s = al.slots[i]
        if s is None or not al.writable():
            written.append(False)
            continue
        arena[s[0] : s[0] + nbytes[i]].view(b.dtype).view(b.shape).copy_(b)
        written.append(True)
    left = max(1.0, (deadline - time.monotonic()) * 1000.0)
    return al.commit(written, timeout_ms=left)
