"""Load or recompute, per request: load only the leading blocks whose load beats recomputing them.

The sidecar's LOOKUP answers, per tier, how many of the hit blocks have their fastest copy there (``tiers``),
the estimated time to load them at the tier's measured read bandwidth (``load_ms``), and how deep the prefix
reaches using only that tier and faster ones (``depth``). Recomputing a block costs ``block_tokens`` at the
engine's prefill rate. A tier is worth loading from when one of its blocks loads faster than it recomputes
(its read time plus the sidecar→engine hop: about nothing through the same-host arena, ``hop_bytes_per_s``
over the socket). The answer is the prefix reachable through the slowest tier still worth it: a slow NFS or S3
hit in the middle of a chain cuts the load there, so a slow tier never makes TTFT worse than no cache.

The prefill rate is measured from the engine's own steps (``PrefillRate.observe``: tokens scheduled between two
consecutive steps over the time between them, prefill-sized steps only), or configured
(``prefill_tokens_per_s``), whichever is known; until then nothing is cut.
"""
from __future__ import annotations

import time
from typing import Any, Dict, List, Optional

#: steps smaller than this do not measure prefill speed (decode steps are latency-bound)
MIN_STEP_TOKENS = 512


class PrefillRate:
    """Exponentially weighted prefill throughput of this engine, tokens per second."""

    def __init__(self, configured: float = 0.0) -> None:
        self.configured = float(configured)
        self.measured = 0.0
        self._last: Optional[float] = None
        self._last_tokens = 0

    def observe(self, scheduled_tokens: int, now: Optional[float] = None) -> None:
        """Call once per engine step with the tokens that step schedules (the previous step's time is now over)."""
        now = time.monotonic() if now is None else now
        if self._last is not None and self._last_tokens >= MIN_STEP_TOKENS:
            dt = now - self._last
            if 0 < dt < 60:
                r = self._last_tokens / dt
                self.measured = r if not self.measured else 0.8 * self.measured + 0.2 * r
        self._last, self._last_tokens = now, int(scheduled_tokens)

    def tokens_per_s(self) -> float:
        return self.measured or self.configured


def worth_loading(res: Any, tiers_order: List[str], block_tokens: int, block_bytes: int, rate: float,
                  hop_bytes_per_s: float = 0.0) -> int:
    """Leading blocks of a LOOKUP result worth loading (≤ res.hit). ``tiers_order``: fastest first."""
    hit = int(res.hit)
    depth: Dict[str, int] = dict(getattr(res, "depth", None) or {})
    if hit == 0 or rate <= 0 or not depth:
        return hit
    recompute_ms = block_tokens / rate * 1000.0
    hop_ms = block_bytes / hop_bytes_per_s * 1000.0 if hop_bytes_per_s > 0 else 0.0
    usable = 0
    for name in tiers_order:
        n = int(res.tiers.get(name, 0))
        if n:
            per_block = float(res.load_ms.get(name, 0.0)) / n + hop_ms
            if per_block > recompute_ms:
                break  # this tier and every slower one cost more than they save
        usable = int(depth.get(name, usable))
    return min(hit, usable)
