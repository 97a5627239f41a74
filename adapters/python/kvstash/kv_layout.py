"""Paged KV-cache layouts of vLLM and the canonical byte order of a stored block.

Stored block value (one per block hash, all layers of this rank, contiguous, native little-endian bytes of
the cache dtype):

- attention with K and V: ``[layer][k=0, v=1][token slot 0..block_size-1][kv head][head dim]``
- MLA (one latent vector per token): ``[layer][token slot][head dim]``

Layers are in the order of ``ordered_layers`` (natural sort of the layer names, i.e. model order). The order
does not depend on the engine's physical tensor layout: a block saved from an HND cache loads into an NHD
cache, and from the old 5-D layout into the v0.23 one, because the namespace layout fingerprint
(``LayoutSpec.fingerprint``) names only what changes the canonical bytes.

Per-layer tensor layouts recognised (docs/engine-interfaces.md §1.6):

==============  =======================================  ====================================
kind            logical shape                            notes
==============  =======================================  ====================================
kv_first        (2, num_blocks, block_size, heads, dim)  FlashAttention up to v0.22
blocks_first    (num_blocks, 2, block_size, heads, dim)  from v0.23; HND when strides say so
mla             (num_blocks, block_size, dim)            MLA backends
==============  =======================================  ====================================

The block-count dimension is checked against the registered number of blocks, because ``num_kv_heads``
(or the block count itself) can also be 2. The 4-D "standardized view" is not supported (LayoutError).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, List, Optional, Sequence

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
    want_tail = (spec.block_size, spec.num_kv_heads, spec.head_size)
    if shape[2:] != want_tail:
        raise LayoutError(f"KV tensor {shape}: trailing dims must be (block_size, kv_heads, head_size) = {want_tail}")
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
    hnd = spec.num_kv_heads > 1 and spec.block_size > 1 and strides[3] > strides[2]
    return TensorLayout(kind, hnd, nb)


def gather_blocks(kv: Any, layout: TensorLayout, idx: Any, dst: Any, non_blocking: bool = False) -> None:
    """Copy blocks ``idx`` (int64 tensor on kv's device) of one layer into ``dst`` (n, *layer_shape)."""
    import torch

    if layout.kind == "kv_first":
        dst.copy_(torch.index_select(kv, 1, idx).transpose(0, 1), non_blocking=non_blocking)
    else:
        dst.copy_(torch.index_select(kv, 0, idx), non_blocking=non_blocking)


def scatter_blocks(kv: Any, layout: TensorLayout, idx: Any, src: Any) -> None:
    """Write ``src`` (n, *layer_shape) into blocks ``idx`` of one layer; src may live on the host."""
    if src.device != kv.device:
        src = src.to(kv.device, non_blocking=True)
    if layout.kind == "kv_first":
        kv.index_copy_(1, idx, src.transpose(0, 1))
    else:
        kv.index_copy_(0, idx, src)
