"""Paged KV-cache layouts of vLLM and the canonical byte order of a stored block.

Stored block value (one per block hash, all layers of this rank, contiguous, native little-endian bytes of
the cache dtype):

- attention with K and V: ``[layer][k=0, v=1][token slot 0..block_size-1][kv head][head dim]``
- MLA (one latent vector per token): ``[layer][token slot][head dim]``

Layers are in the order of ``ordered_layers`` (natural sort of the layer names, i.e. model order). The order
does not depend on the engine's physical tensor layout: a block saved from an HND cache loads into an NHD
cache, and from the old 5-D layout into the v0.23 one, because the namespace layout fingerprint
(``LayoutSpec.fingerprint``) names only what changes the canonical bytes.

Per-layer tensor layouts recognised (docs/engine-interfaces.md §1.6; the attention backends'
``get_kv_cache_shape`` / ``get_kv_cache_stride_order`` in vLLM ``vllm/v1/attention/backends/*.py``):

==============  ============================================  ================================================
kind            logical shape                                 backends
==============  ============================================  ================================================
kv_first        (2, num_blocks, block_size, heads, dim)       FlashAttention up to v0.22, FlexAttention, Triton
                                                              (older), xFormers-era backends
blocks_first    (num_blocks, 2, block_size, heads, dim)       FlashAttention from v0.23, FlashInfer, Triton;
                                                              HND when the strides say so (stride order)
(either)        … heads, block_size, dim) as the SHAPE        CPU attention (``(2, num_blocks, heads,
                                                              block_size, dim)``): ``heads_first``
(either)        … dim + pad) as the last dimension            per-token-head-scale caches ``(num_blocks, 2,
                                                              block_size, heads, head_size + pad)``: the whole
                                                              padded row is stored (scales included)
mla             (num_blocks, block_size, dim)                 MLA backends (FlashMLA, Triton MLA, CUTLASS MLA)
==============  ============================================  ================================================

The block-count dimension is checked against the registered number of blocks, because ``num_kv_heads``
(or the block count itself) can also be 2. Refused with LayoutError (the worker then switches itself off and
tells the scheduler, never loading half a layout): the 4-D "standardized view", the flat 3-D paged-attention
shape ``(2, num_blocks, block_size * heads * dim)`` (its token order is not token-major), packed fp8 MLA caches
(``fp8_ds_mla``: uint8 rows of 656 bytes), and anything else.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, List, Optional, Sequence, Tuple

_ITEMSIZE = {
    "float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2, "float64": 8,
    "uint8": 1, "int8": 1, "float8_e4m3fn": 1, "float8_e5m2": 1, "fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1,
}


class LayoutError(ValueError):
    """A KV tensor does not match any supported layout, or disagrees with the configured spec."""


def dtype_name(dtype: Any) -> str:
    """'torch.bfloat16' / torch.bfloat16 / 'bfloat16' → 'bfloat16'."""
    return str(dtype).replace("torch.", "")


@dataclass(frozen=True)
class LayoutSpec:
    dtype: str
    block_size: int
    num_layers: int  #: attention layers of the whole model (pipeline stages are told apart by pp_rank)
    num_kv_heads: int  #: KV heads on this tensor-parallel rank (1 for MLA)
    head_size: int
    mla: bool

    def fingerprint(self) -> str:
        kind = "mla" if self.mla else "kv"
        return f"{self.dtype};bs={self.block_size};L={self.num_layers};H={self.num_kv_heads};D={self.head_size};{kind}"

    @property
    def itemsize(self) -> int:
        if self.dtype not in _ITEMSIZE:
            raise LayoutError(f"unknown KV dtype {self.dtype!r}")
        return _ITEMSIZE[self.dtype]

    def layer_shape(self) -> tuple:
        """Canonical shape of one layer of one block."""
        if self.mla:
            return (self.block_size, self.head_size)
        return (2, self.block_size, self.num_kv_heads, self.head_size)

    def layer_bytes(self) -> int:
        n = self.itemsize
        for d in self.layer_shape():
            n *= d
        return n


@dataclass(frozen=True)
class TensorLayout:
    kind: str  #: "kv_first" | "blocks_first" | "mla"
    hnd: bool  #: physical order has heads outside token slots
    num_blocks: int
    heads_first: bool = False  #: the SHAPE (not only the strides) puts heads before the token slot (CPU backend)
    dim: int = 0  #: last dimension as allocated (head_size + pad for per-token-head-scale caches); 0: head_size


def ordered_layers(names: Iterable[str]) -> List[str]:
    """Layer names in model order (natural sort: layers.2 before layers.10)."""
    def key(s: str) -> list:
        return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", s)]
    return sorted(names, key=key)


def detect_layout(shape: Sequence[int], strides: Sequence[int], spec: LayoutSpec,
                  num_blocks: Optional[int] = None, hint: Optional[str] = None) -> TensorLayout:
    """Recognise a per-layer KV tensor from its shape and strides; raise LayoutError if it does not fit."""
    shape, strides = tuple(int(x) for x in shape), tuple(int(x) for x in strides)
    if len(shape) == 3:
        if not spec.mla:
            raise LayoutError(f"3-D (MLA) KV tensor {shape} but the model config says K/V attention")
        if shape[1:] != (spec.block_size, spec.head_size):
            raise LayoutError(f"MLA tensor {shape}: expected (blocks, {spec.block_size}, {spec.head_size})")
        if num_blocks is not None and shape[0] != num_blocks:
            raise LayoutError(f"MLA tensor {shape}: {shape[0]} blocks, registered {num_blocks}")
        return TensorLayout("mla", False, shape[0])
    if len(shape) == 4:
        raise LayoutError(f"4-D KV tensor {shape} (standardized view) is not supported")
    if len(shape) != 5:
        raise LayoutError(f"KV tensor of shape {shape} is not a supported layout")
    if spec.mla:
        raise LayoutError(f"5-D KV tensor {shape} but the model config says MLA")
    dim = shape[4]
    if dim < spec.head_size or dim > 2 * spec.head_size:
        raise LayoutError(f"KV tensor {shape}: last dim {dim} is neither head_size {spec.head_size} nor head_size + pad")
    if shape[2:4] == (spec.block_size, spec.num_kv_heads):
        heads_first = False
    elif shape[2:4] == (spec.num_kv_heads, spec.block_size):
        heads_first = True
    else:
        raise LayoutError(f"KV tensor {shape}: dims 2-3 must be (block_size, kv_heads) or (kv_heads, block_size) = "
                          f"({spec.block_size}, {spec.num_kv_heads})")
    a, b = shape[0], shape[1]
    cands = []
    if a == 2 and (num_blocks is None or b == num_blocks):
        cands.append("kv_first")
    if b == 2 and (num_blocks is None or a == num_blocks):
        cands.append("blocks_first")
    if len(cands) == 2:
        if hint in cands:
            cands = [hint]
        else:
            raise LayoutError(f"KV tensor {shape} is ambiguous (2 blocks?); set kv_connector_extra_config.kv_layout "
                              "to 'kv_first' or 'blocks_first'")
    if not cands:
        raise LayoutError(f"KV tensor {shape}: neither (2, {num_blocks}, …) nor ({num_blocks}, 2, …)")
    kind = cands[0]
    nb = b if kind == "kv_first" else a
    hnd = heads_first or (spec.num_kv_heads > 1 and spec.block_size > 1 and strides[3] > strides[2])
    return TensorLayout(kind, hnd, nb, heads_first, dim if dim != spec.head_size else 0)


def _logical(kv: Any, layout: TensorLayout) -> Any:
    """View of a layer tensor with the token slot before the heads (what the stored order needs)."""
    return kv.transpose(-3, -2) if layout.heads_first else kv


def index_runs(ids: List[int]) -> List[Tuple[int, int, int, int]]:
    """Split block ids into arithmetic runs ``(first, start, step, count)``: ids[first + k] == start + k*step.

    A run with a positive step is one strided slice of the cache, so on the CPU a layer's blocks move with one
    strided copy per run instead of ``index_copy_``/``index_select`` (which stage through a gathered temporary and
    ran 3-4x slower than the slice copy in bench/arena.py's shape)."""
    runs: List[Tuple[int, int, int, int]] = []
    i, n = 0, len(ids)
    while i < n:
        step, j = 1, i + 1
        if j < n and ids[j] > ids[i]:
            step = ids[j] - ids[i]
            while j < n and ids[j] - ids[j - 1] == step:
                j += 1
        runs.append((i, ids[i], step, j - i))
        i = j
    return runs


def _runs(idx: Any) -> Optional[List[Tuple[int, int, int, int]]]:
    """Runs of ``idx`` worth copying run by run: CPU tensors whose ids form few runs (vLLM hands out free
    blocks mostly in order); None means one indexed copy (GPU, or ids too scattered for a loop of slices)."""
    if idx.device.type != "cpu" or idx.numel() == 0:
        return None
    runs = index_runs(idx.tolist())
    return runs if len(runs) * 4 <= idx.numel() or len(runs) <= 2 else None


def _blocks(kv: Any, layout: TensorLayout, start: int, step: int, count: int) -> Any:
    sl = slice(start, start + step * (count - 1) + 1, step)
    return kv[:, sl].transpose(0, 1) if layout.kind == "kv_first" else kv[sl]


def gather_blocks(kv: Any, layout: TensorLayout, idx: Any, dst: Any, non_blocking: bool = False) -> None:
    """Copy blocks ``idx`` (int64 tensor on kv's device) of one layer into ``dst`` (n, *layer_shape)."""
    import torch

    kv = _logical(kv, layout)
    runs = _runs(idx) if dst.device == kv.device else None
    if runs is not None:
        for first, start, step, count in runs:
            dst[first : first + count].copy_(_blocks(kv, layout, start, step, count))
    elif layout.kind == "kv_first":
        dst.copy_(torch.index_select(kv, 1, idx).transpose(0, 1), non_blocking=non_blocking)
    else:
        dst.copy_(torch.index_select(kv, 0, idx), non_blocking=non_blocking)


def scatter_blocks(kv: Any, layout: TensorLayout, idx: Any, src: Any) -> None:
    """Write ``src`` (n, *layer_shape) into blocks ``idx`` of one layer; src may live on the host."""
    if src.device != kv.device:
        src = src.to(kv.device, non_blocking=True)
    kv = _logical(kv, layout)
    runs = _runs(idx)
    if runs is not None:
        for first, start, step, count in runs:
            _blocks(kv, layout, start, step, count).copy_(src[first : first + count])
    elif layout.kind == "kv_first":
        kv.index_copy_(1, idx, src.transpose(0, 1))
    else:
        kv.index_copy_(0, idx, src)
