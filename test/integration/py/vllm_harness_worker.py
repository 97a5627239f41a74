"""Worker process of the vLLM connector harness: holds real paged KV tensors (CPU torch) and drives the
WORKER-role KvstashConnector exactly in vLLM's per-step order (docs/engine-interfaces.md §1.5), in one of two
lifecycles (scenario key ``lifecycle``):

- ``old`` (vLLM base.py @ 13f4ad0, v1/worker/kv_connector_model_runner_mixin.py of that time):
  bind_connector_metadata → start_load_kv → per layer (wait_for_layer_load, write this step's KV,
  save_kv_layer) → wait_for_save → get_finished → get_block_ids_with_load_errors → clear_connector_metadata.
- ``new`` (vLLM main: mixin ``pre_forward``/``post_forward`` with ``SchedulerOutput.has_sync_kv_loads``,
  base.py @ 7ba3df63 ``get_transfer_results``): handle_preemptions(metadata) → bind → start_load_kv before
  the forward pass only when the step has a synchronous load, else after it → wait_for_save →
  get_transfer_results → get_block_ids_with_load_errors → build_connector_worker_meta → clear.

A shadow copy of the cache tracks what every byte should be: the initial random garbage, the KV this
worker computed, and — for loads the connector reported as successful — the true KV of those tokens. At
the end the whole cache must equal the shadow bit for bit. Right after wait_for_layer_load(layer) the loaded
slots of that layer must already hold the true KV; if they do not, the request's tokens computed in that
step are "poisoned" (attention over wrong KV), which a later engine would detect if they were ever saved.
"""
from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from vllm_harness_common import ITEMSIZE, Truth, group_block, layer_names, make_configs, pool_blocks, recv, send  # noqa: E402

from kvstash.vllm import KvstashConnector  # noqa: E402
from kvstash.vllm_compat import KVConnectorRole  # noqa: E402

DT = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def alloc(spec, gen):
    """Per-layer KV tensor in the requested layout, plus its physical (contiguous) storage tensor."""
    nb, bs, h, d, kind = pool_blocks(spec), spec["block_size"], spec["heads"], spec["head_size"], spec["layout"]
    pad = spec.get("pad", 8)
    # cpu: vLLM's CPU attention backend shape (heads before slots); pad: per-token-head-scale cache (head_size + pad)
    shape = {"kv_first": (2, nb, bs, h, d), "blocks_first": (nb, 2, bs, h, d), "hnd": (nb, 2, h, bs, d), "mla": (nb, bs, d),
             "cpu": (2, nb, h, bs, d), "pad": (nb, 2, bs, h, d + pad)}[kind]
    n = 1
    for x in shape:
        n *= x
    phys = torch.randint(0, 256, (n * ITEMSIZE[spec["dtype"]],), dtype=torch.uint8, generator=gen).view(DT[spec["dtype"]]).view(shape)
    return phys, (phys.permute(0, 1, 3, 2, 4) if kind == "hnd" else phys)


def slot(kv, kind, block, s):
    if kind == "kv_first":
        return kv[:, block, s]
    if kind == "cpu":
        return kv[:, block, :, s]
    if kind == "mla":
        return kv[block, s]
    return kv[block, :, s]


class Worker:
    def __init__(self, spec):
        self.spec, self.kind = spec, spec["layout"]
        vc, kcc = make_configs(spec, spec["extra"], rank=spec.get("rank", 0))
        self.conn = KvstashConnector(vc, KVConnectorRole.WORKER, kcc)
        gen = torch.Generator().manual_seed(spec["seed"])
        self.names = layer_names(spec["layers"])
        self.order = sorted(self.names, key=lambda s: int(s.split(".")[2]))  # model (forward) order
        self.phys, self.kv, self.shadow_phys, self.shadow = {}, {}, {}, {}
        for n in self.names:
            p, v = alloc(spec, gen)
            self.phys[n], self.kv[n] = p, v
            sp = p.clone()
            self.shadow_phys[n] = sp
            self.shadow[n] = sp.permute(0, 1, 3, 2, 4) if self.kind == "hnd" else sp
        self.dtype = DT[spec["dtype"]]
        d = spec["head_size"] + (spec.get("pad", 8) if self.kind == "pad" else 0)  # the model writes the whole padded row
        self.tshape = (spec["head_size"],) if self.kind == "mla" else (2, spec["heads"], d)
        tb = ITEMSIZE[spec["dtype"]]
        for x in self.tshape:
            tb *= x
        self.truth = Truth(spec["layers"], tb, spec.get("rank", 0))
        if spec.get("break_layout"):  # a layout the connector does not know: it must switch itself off, and say so
            self.conn.register_kv_caches({n: v.flatten(-2) for n, v in self.kv.items()})
        else:
            self.conn.register_kv_caches(dict(self.kv))
        self.async_pending = {}  # req id -> (block ids, token ids, start, end)
        # KV-cache groups (scenario "groups"): layer -> group, and the sliding window (tokens) of its group
        self.group_of, self.window_of = {}, {}
        for g, grp in enumerate(spec.get("groups") or []):
            for n in self.names:
                if int(n.split(".")[2]) in grp["layers"]:
                    self.group_of[n], self.window_of[n] = g, grp.get("window")
        self.bad_loads = 0  # loads reported fine whose slots were wrong at wait_for_layer_load time

    def _val(self, b):
        return torch.frombuffer(bytearray(b), dtype=torch.uint8).view(self.dtype).view(self.tshape)

    def _write(self, name, li, block, s, b):
        v = self._val(b)
        slot(self.kv[name], self.kind, block, s).copy_(v)
        slot(self.shadow[name], self.kind, block, s).copy_(v)

    def gb(self, name, block):
        """The id of position `block` (group 0's id) in the layer's KV-cache group."""
        return group_block(self.spec, block, self.group_of.get(name, 0))

    def _needed(self, name, t, end):
        """Does attention at the first computed position `end` read token t of this layer? (sliding window)"""
        w = self.window_of.get(name)
        return w is None or t >= end - w + 1

    def _loaded_ok(self, name, li, r, hashes):
        bs = self.spec["block_size"]
        for t in range(r["load"][0], r["load"][1]):
            if not self._needed(name, t, r["load"][1]):
                continue
            got = slot(self.kv[name], self.kind, self.gb(name, r["blocks"][t // bs]), t % bs).contiguous().view(-1).view(torch.uint8)
            if bytes(got.numpy()) != self.truth.layer(hashes[t], li):
                return False
        return True

    def _accept_load(self, r, failed):
        """The load of r's tokens [a, b) is done: good blocks now hold the truth; failed ones are don't-care."""
        bs = self.spec["block_size"]
        hashes = self.truth.prefix_hashes(r["tokens"])
        for t in range(r["load"][0], r["load"][1]):
            for li, name in enumerate(self.order):
                block = self.gb(name, r["blocks"][t // bs])
                true = self._val(self.truth.layer(hashes[t], li))
                if block in failed:
                    slot(self.shadow[name], self.kind, block, t % bs).copy_(slot(self.kv[name], self.kind, block, t % bs))
                elif self._needed(name, t, r["load"][1]) or bytes(slot(self.kv[name], self.kind, block, t % bs).contiguous().view(-1).view(torch.uint8).numpy()) == self.truth.layer(hashes[t], li):
                    slot(self.shadow[name], self.kind, block, t % bs).copy_(true)  # outside the window: only if loaded

    def step(self, msg):
        import pickle

        md = pickle.loads(msg["metadata"])
        reqs = msg["reqs"]
        bs = self.spec["block_size"]
        hashes = {r["id"]: self.truth.prefix_hashes(r["tokens"]) for r in reqs}
        for r in reqs:
            if r.get("async_load"):
                self.async_pending[r["id"]] = r
        t0 = time.monotonic()
        new = self.spec.get("lifecycle") == "new"
        has_sync = any(r.get("load") and not r.get("async_load") for r in reqs)
        if new:
            self.conn.handle_preemptions(md)
        self.conn.bind_connector_metadata(md)
        if not new or has_sync:
            self.conn.start_load_kv(None)
        poisoned = set()
        for li, name in enumerate(self.order):
            self.conn.wait_for_layer_load(name)
            for r in reqs:
                if r.get("load") and not r.get("async_load") and r["id"] not in poisoned and not self._loaded_ok(name, li, r, hashes[r["id"]]):
                    poisoned.add(r["id"])
                lo, hi = r["compute"]
                for t in range(lo, hi):
                    b = self.truth.layer(hashes[r["id"]][t], li)
                    if r["id"] in poisoned:
                        b = bytes(x ^ 0xFF for x in b)
                    self._write(name, li, self.gb(name, r["blocks"][t // bs]), t % bs, b)
            self.conn.save_kv_layer(name, self.kv[name], None)
        if new and not has_sync:  # post_forward: asynchronous loads start after the forward pass
            self.conn.start_load_kv(None)
        self.conn.wait_for_save()
        failed_recving = set()
        if new:
            tr = self.conn.get_transfer_results(set(msg.get("finished", ())))
            recving, failed_recving = set(tr.finished_recving), set(tr.failed_recving)
            assert failed_recving <= recving, "a failed receive must also be reported finished"
        else:
            _sending, recving = self.conn.get_finished(set(msg.get("finished", ())))
        errors = set(self.conn.get_block_ids_with_load_errors())
        wmeta = self.conn.build_connector_worker_meta() if new else None
        self.conn.clear_connector_metadata()
        elapsed = time.monotonic() - t0
        for r in reqs:
            if r.get("load") and not r.get("async_load"):
                if r["id"] in poisoned and not (set(r["blocks"]) & errors):
                    self.bad_loads += 1
                self._accept_load(r, errors)
        for rid in recving or ():
            r = self.async_pending.pop(rid, None)
            if r is not None:
                self._accept_load(r, errors)
        return {"finished_recving": sorted(recving or ()), "errors": sorted(errors), "poisoned": sorted(poisoned), "elapsed": elapsed,
                "failed_recving": sorted(failed_recving), "worker_meta": pickle.dumps(wmeta)}

    def check(self):
        bad = 0
        for n in self.names:
            a, b = self.phys[n].view(-1).view(torch.uint8), self.shadow_phys[n].view(-1).view(torch.uint8)
            if not torch.equal(a, b):
                bad += int((a != b).sum())
        return {"mismatched_bytes": bad, "bad_loads": self.bad_loads}


def main():
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing else may write to the framed pipe
    w = Worker(recv(stdin))
    send(stdout, {"ready": True})
    while True:
        msg = recv(stdin)
        if msg["op"] == "step":
            send(stdout, w.step(msg))
        elif msg["op"] == "check":
            send(stdout, w.check())
        elif msg["op"] == "shutdown":
            t0 = time.monotonic()
            w.conn.shutdown()
            send(stdout, {"counters": w.conn._worker.counters if w.conn._worker else {}, "shutdown_s": time.monotonic() - t0})
            return


if __name__ == "__main__":
    main()
