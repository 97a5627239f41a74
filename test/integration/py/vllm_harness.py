"""vLLM connector harness: one emulated vLLM engine = this process (EngineCore: scheduler + the SCHEDULER-role
KvstashConnector) + a worker process (vllm_harness_worker.py: real paged KV tensors + the WORKER-role
connector). The per-step connector metadata crosses the process boundary pickled, as in vLLM.

Usage: python3 vllm_harness.py < scenario.json (one line) ; prints progress lines and, last, one JSON result line.
Scenario keys: endpoint, layout (kv_first | blocks_first | hnd | mla), dtype, layers, block_size, heads,
head_size, num_blocks, seed (block placement and initial garbage), token_budget, decode_steps, prompts
(list of token lists), extra (kv_connector_extra_config), pause_before_load (print PAUSED, wait for a stdin
line before the first step that loads), delete_before_load (hex keys deleted from the sidecar right before
that step), delete_at_start ({rank, keys}: deleted from that rank's namespace before any lookup), tp
(worker processes, one per tensor-parallel rank; their answers are aggregated as vLLM does), idle_steps, lifecycle (old | new: the
worker's call order, see vllm_harness_worker.py), kv_events (kv_events_config.enable_kv_cache_events),
failure_policy (kv_load_failure_policy), break_layout (the worker registers 4-D views it cannot use).

The scheduler loop follows vLLM's: running requests first, then waiting ones; for a new request it takes
the local prefix-cache hit, asks get_num_new_matched_tokens (twice — it must have no side effects),
allocates blocks (random placement), calls update_state_after_alloc, and either schedules the request
(synchronous load) or parks it until a worker reports it in get_finished (asynchronous load). Load errors
roll the request back to the first failed block (kv_load_failure_policy "recompute").
"""
from __future__ import annotations

import json
import os
import pickle
import random
import subprocess
import sys
import time
from collections import deque
from types import SimpleNamespace

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from vllm_harness_common import (  # noqa: E402
    CachedRequestData, KVCacheBlocks, NewRequestData, Request, make_configs, next_token, per_group, recv, send, vllm_block_hashes)

from kvstash.vllm import KvstashConnector  # noqa: E402
from kvstash.vllm_compat import KVConnectorRole  # noqa: E402


def out(**kw):
    print(json.dumps(kw), flush=True)


class Engine:
    def __init__(self, sc):
        self.sc, self.bs = sc, sc["block_size"]
        vc, kcc = make_configs(sc, sc["extra"])
        self.conn = KvstashConnector(vc, KVConnectorRole.SCHEDULER, kcc)
        self.free = list(range(1 if sc.get("groups") else 0, sc["num_blocks"]))  # hybrid: block 0 is vLLM's null block
        random.Random(sc["seed"]).shuffle(self.free)
        self.local = {}  # vLLM block hash -> block id (local prefix cache)
        self.workers = []  # one process per tensor-parallel rank, as in vLLM
        for rank in range(sc.get("tp", 1)):
            w = subprocess.Popen([sys.executable, os.path.join(HERE, "vllm_harness_worker.py")], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            send(w.stdin, {**sc, "rank": rank})
            self.workers.append(w)
        for w in self.workers:
            assert recv(w.stdout)["ready"]
        self.events, self.results, self.lookup_s = [], {}, 0.0
        self.max_step_s, self.paused = 0.0, False
        self.lookups = []  # (seconds of the first get_num_new_matched_tokens call, after the pause?) per new request
        self.take_events_max_s = 0.0

    def call(self, msg):
        """Send one message to every worker; vLLM aggregates: load errors are the union, a request has finished
        receiving once every worker reported it."""
        for w in self.workers:
            send(w.stdin, msg)
        reps = [recv(w.stdout) for w in self.workers]
        if msg["op"] != "step":
            return reps
        fin = set(reps[0]["finished_recving"])
        for r in reps[1:]:
            fin &= set(r["finished_recving"])
        self.pending_fin = getattr(self, "pending_fin", {})
        for r in reps:
            for rid in r["finished_recving"]:
                self.pending_fin[rid] = self.pending_fin.get(rid, 0) + 1
        done = sorted(rid for rid, c in self.pending_fin.items() if c == len(self.workers))
        for rid in done:
            del self.pending_fin[rid]
        meta = None  # vLLM folds the workers' metadata with aggregate() (KVOutputAggregator)
        for r in reps:
            m = pickle.loads(r["worker_meta"])
            if m is not None:
                meta = m if meta is None else meta.aggregate(m)
        errors = sorted(set().union(*[r["errors"] for r in reps]))
        # the scheduler's update_from_output hands the aggregated KVConnectorOutput to the connector
        self.conn.update_connector_output(SimpleNamespace(finished_sending=set(), finished_recving=set(done), invalid_block_ids=set(errors),
                                                          kv_connector_worker_meta=meta))
        return {"finished_recving": done, "errors": errors,
                "poisoned": sorted(set().union(*[r["poisoned"] for r in reps])), "elapsed": max(r["elapsed"] for r in reps)}

    def alloc(self, n):
        if len(self.free) < n:
            raise RuntimeError("harness out of blocks: raise num_blocks")
        ids, self.free = self.free[:n], self.free[n:]
        return ids

    def local_hit(self, req):
        ids = []
        for h in vllm_block_hashes(req.prompt_token_ids, self.bs)[: (len(req.prompt_token_ids) - 1) // self.bs]:
            if h not in self.local:
                break
            ids.append(self.local[h])
        return ids

    def run(self):
        sc, bs, conn = self.sc, self.bs, self.conn
        if sc.get("delete_at_start"):  # {"rank": r, "keys": [hex]}: before any lookup
            self.delete(sc["delete_at_start"]["keys"], sc["delete_at_start"]["rank"])
        waiting = deque()
        for i, p in enumerate(sc["prompts"]):
            r = Request(f"req-{i}", p, bs, lora_name=sc.get("lora"), cache_salt=sc.get("cache_salt"))
            r.blocks, r.state, r.ext, r.local = [], "new", 0, 0
            waiting.append(r)
            self.results[r.request_id] = {"ext_tokens": 0, "local_tokens": 0, "async": False, "load_errors": 0, "poisoned": 0}
        running, parked, done = [], {}, 0
        # A deadline, not a step count: on a loaded machine an asynchronous load can take seconds while idle steps
        # (only parked requests) go round in milliseconds.
        steps, deadline = 0, time.monotonic() + float(sc.get("deadline_s", 150))
        while done < len(sc["prompts"]):
            steps += 1
            if time.monotonic() > deadline:
                raise RuntimeError(f"harness did not converge: {done} of {len(sc['prompts'])} done after {steps} steps, "
                                   f"parked {sorted(parked)}, waiting {[r.request_id for r in waiting]}")
            if parked and not running and not waiting:
                time.sleep(0.002)  # nothing to compute until a load lands: do not spin the worker
            budget, new, cached, nst, plan = sc["token_budget"], [], CachedRequestData(), {}, []
            for r in list(running):
                if budget <= 0:
                    break
                need = len(r.all_token_ids) - r.num_computed_tokens
                n = min(need, budget)
                want = -(-(r.num_computed_tokens + n) // bs)
                extra_ids = self.alloc(max(0, want - len(r.blocks)))
                r.blocks += extra_ids
                cached.req_ids.append(r.request_id)
                cached.resumed_from_preemption.append(False)
                cached.new_token_ids.append([])
                cached.new_block_ids.append(per_group(extra_ids, sc) if extra_ids else None)
                cached.num_computed_tokens.append(r.num_computed_tokens)
                nst[r.request_id] = n
                budget -= n
                plan.append({"id": r.request_id, "tokens": r.all_token_ids, "blocks": list(r.blocks), "compute": (r.num_computed_tokens, r.num_computed_tokens + n)})
            while waiting and budget > 0:
                r = waiting[0]
                load = None
                if r.state == "new":
                    local = self.local_hit(r)
                    t0 = time.monotonic()
                    ext, is_async = conn.get_num_new_matched_tokens(r, len(local) * bs)
                    t1 = time.monotonic()
                    again = conn.get_num_new_matched_tokens(r, len(local) * bs)
                    self.lookup_s += time.monotonic() - t0
                    self.lookups.append((t1 - t0, self.paused))
                    assert (ext, is_async) == again, f"get_num_new_matched_tokens not repeatable: {(ext, is_async)} vs {again}"
                    assert ext % bs == 0 and len(local) * bs + ext <= len(r.prompt_token_ids) - 1
                    r.local, r.ext = len(local) * bs, ext
                    res = self.results[r.request_id]
                    res.update(ext_tokens=ext, local_tokens=r.local, lookup_step=steps, **{"async": is_async})
                    r.blocks = local + self.alloc(-(-len(r.prompt_token_ids) // bs) - len(local))
                    conn.update_state_after_alloc(r, KVCacheBlocks(r.blocks, sc), ext)
                    if is_async:
                        waiting.popleft()
                        r.state, r.num_computed_tokens = "remote", r.local
                        parked[r.request_id] = r
                        plan.append({"id": r.request_id, "tokens": r.all_token_ids, "blocks": list(r.blocks), "compute": (0, 0),
                                     "load": (r.local, r.local + ext), "async_load": True})
                        continue
                    r.num_computed_tokens = r.local + ext
                    if ext:
                        load = (r.local, r.local + ext)
                elif r.state == "resumed":  # asynchronous load finished: scheduled again, no new lookup
                    conn.update_state_after_alloc(r, KVCacheBlocks(r.blocks, sc), 0)
                waiting.popleft()
                n = min(len(r.prompt_token_ids) - r.num_computed_tokens, budget)
                new.append(NewRequestData(r.request_id, r.prompt_token_ids, per_group(r.blocks, sc), r.num_computed_tokens))
                nst[r.request_id] = n
                budget -= n
                r.state = "running"
                running.append(r)
                p = {"id": r.request_id, "tokens": r.all_token_ids, "blocks": list(r.blocks), "compute": (r.num_computed_tokens, r.num_computed_tokens + n)}
                if load:
                    p["load"] = load
                plan.append(p)
            so = type("SchedulerOutput", (), {})()
            so.scheduled_new_reqs, so.scheduled_cached_reqs, so.num_scheduled_tokens = new, cached, nst
            so.preempted_req_ids, so.finished_req_ids = set(), set()
            md = conn.build_connector_meta(so)
            wire = pickle.dumps(md)
            if md.loads and not self.paused and (sc.get("pause_before_load") or sc.get("delete_before_load")):
                self.paused = True
                if sc.get("delete_before_load"):
                    self.delete(sc["delete_before_load"])
                if sc.get("pause_before_load"):
                    out(event="PAUSED")
                    sys.stdin.readline()
            rep = self.call({"op": "step", "metadata": wire, "reqs": plan})
            self.max_step_s = max(self.max_step_s, rep["elapsed"])
            errors = {e % sc["num_blocks"] for e in rep["errors"]}  # any group's id of a position → that position's id
            for r in running:
                n = nst.get(r.request_id, 0)
                r.num_computed_tokens += n
                bad = [i for i, b in enumerate(r.blocks) if b in errors]
                if bad:
                    self.results[r.request_id]["load_errors"] += len([b for b in r.blocks if b in errors])
                    r.num_computed_tokens = min(r.num_computed_tokens, bad[0] * bs)
                if r.request_id in rep["poisoned"]:
                    self.results[r.request_id]["poisoned"] += 1
            for rid in rep["finished_recving"]:
                r = parked.pop(rid)
                bad = [i for i, b in enumerate(r.blocks) if b in errors]
                r.num_computed_tokens = r.local + r.ext
                if bad:
                    self.results[rid]["load_errors"] += len([b for b in r.blocks if b in errors])
                    r.num_computed_tokens = min(r.num_computed_tokens, bad[0] * bs)
                r.state = "resumed"
                waiting.appendleft(r)
            for r in list(running):
                full = r.num_computed_tokens // bs
                for i, h in enumerate(vllm_block_hashes(r.all_token_ids[: full * bs], bs)):
                    self.local.setdefault(h, r.blocks[i])
                if r.num_computed_tokens >= len(r.all_token_ids):  # a new token was sampled
                    if len(r.output_token_ids) >= sc["decode_steps"]:
                        conn.request_finished(r, list(r.blocks))
                        running.remove(r)
                        done += 1
                    else:
                        r.output_token_ids.append(next_token(r.all_token_ids))
            self.take_events()
        # Let the last saves land, then collect their events: at least idle_steps, then until the scheduler
        # connector has no run left to confirm (saves are asynchronous; a loaded machine delays them).
        idle, deadline = 0, time.monotonic() + 20.0
        while idle < sc.get("idle_steps", 2) or (conn._scheduler.events_pending() and time.monotonic() < deadline):
            idle += 1
            time.sleep(0.2)
            so = type("SchedulerOutput", (), {})()
            so.scheduled_new_reqs, so.scheduled_cached_reqs, so.num_scheduled_tokens = [], CachedRequestData(), {}
            md = conn.build_connector_meta(so)
            self.call({"op": "step", "metadata": pickle.dumps(md), "reqs": []})
            self.take_events()
        return steps

    def take_events(self):
        t0 = time.monotonic()
        self.events.extend(self.conn.take_events())
        self.take_events_max_s = max(self.take_events_max_s, time.monotonic() - t0)

    def delete(self, keys_hex, rank=0):
        from kvstash.client import KvstashClient

        c = KvstashClient(self.sc["endpoint"], timeout_ms=2000)
        ns = c.namespace(self.conn._scheduler.namespaces[rank])
        c.delete(ns, [bytes.fromhex(k) for k in keys_hex])
        c.close()

    def finish(self):
        checks = self.call({"op": "check"})
        shuts = self.call({"op": "shutdown"})
        for w in self.workers:
            w.wait(timeout=30)
        self.conn.shutdown()
        check = {k: sum(c[k] for c in checks) for k in checks[0]}
        counters = {k: sum(s["counters"].get(k, 0) for s in shuts) for k in shuts[0]["counters"]}
        return check, {"counters": counters, "shutdown_s": max(s["shutdown_s"] for s in shuts)}


def main():
    sc = json.loads(sys.stdin.readline())
    sc["extra"] = {"endpoint": sc["endpoint"], **sc.get("extra", {})}
    t0 = time.monotonic()
    eng = Engine(sc)
    try:
        steps = eng.run()
        check, shut = eng.finish()
    except BaseException:
        for w in eng.workers:
            w.kill()
        raise
    hs = lambda h: None if h is None else str(h)  # noqa: E731  (JSON numbers lose 64-bit precision in JS)
    events = [{"block_hashes": [hs(h) for h in e.block_hashes], "parent": hs(e.parent_block_hash), "token_ids": list(e.token_ids),
               "block_size": e.block_size, "medium": e.medium, "lora_name": e.lora_name} for e in eng.events]
    out(event="RESULT", steps=steps, results=eng.results, check=check, counters=shut["counters"], shutdown_s=shut["shutdown_s"],
        events=events, lookup_s=eng.lookup_s, lookups=eng.lookups, take_events_max_s=eng.take_events_max_s,
        scheduler_counters=eng.conn._scheduler.counters, max_step_s=eng.max_step_s, elapsed_s=time.monotonic() - t0,
        scheduler_imported_torch="torch" in sys.modules)


if __name__ == "__main__":
    main()
