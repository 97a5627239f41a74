"""Drive kvstash's vLLM scheduler side (kvstash.vllm_scheduler.SchedulerSide) as vLLM's scheduler does:
get_num_new_matched_tokens for a new request, one after another, and time each answer. Used by
bench/reliability/sigstop.ts: it prints "ready" after warm lookups, waits for a line on stdin (the sidecar is
then SIGSTOPped), times N lookups spaced `gap_ms` apart and prints them as JSON. The deadline measured is the
connector's own (`lookup_timeout_ms`, vllm_settings.py), left at its default unless the argument sets it."""
import json
import sys
import time
from types import SimpleNamespace

from kvstash.vllm_scheduler import SchedulerSide
from kvstash.vllm_settings import ConnectorSettings

endpoint, n, gap_ms = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
extra = {"endpoint": endpoint}
if len(sys.argv) > 4:
    extra["lookup_timeout_ms"] = float(sys.argv[4])
settings = ConnectorSettings.from_extra(extra)
ns = {"model": "reliability/model", "engine": "vllm", "layout": "bf16;bs=16", "tp_rank": 0, "tp_size": 1,
      "pp_rank": 0, "pp_size": 1, "tenant": "default"}
side = SchedulerSide(settings, 16, [ns], True, False)


def ask(i: int) -> float:
    req = SimpleNamespace(request_id=f"r{i}", all_token_ids=list(range(i, i + 16 * 8 + 1)), lora_request=None,
                          cache_salt=None, mm_features=None, prompt_embeds=None)
    t0 = time.monotonic()
    side.get_num_new_matched_tokens(req, 0)
    return (time.monotonic() - t0) * 1000.0


warm = [ask(i) for i in range(5)]
if side.counters["lookup_failures"]:  # the stalled lookups below must be measured against a sidecar that answered
    sys.exit(f"warm lookups did not reach the sidecar: {side.counters}")
print("ready", flush=True)
sys.stdin.readline()
times = []
for i in range(n):
    times.append(ask(1000 + i))
    time.sleep(gap_ms / 1000.0)
print(json.dumps({"warm_ms": warm, "stalled_ms": times, "lookup_timeout_ms": settings.lookup_timeout_ms,
                  "retry_interval_ms": settings.retry_interval_ms, "failures": side.counters["lookup_failures"]}), flush=True)
side.close()
