"""Drives the Python client's data-socket auth for test/integration/python-auth.test.ts.

JSON commands, one per line on stdin; one JSON line per command on stdout: ``{"ok": true, ...}`` or
``{"ok": false, "code": "KVS_…", "message": "…"}``; every reply carries ``ms`` (the command's wall time).
Clients are named; each command names the one it uses (``name``).

- ``open`` {name, endpoint, timeout_ms, creds: {token, curve_server_key, curve_public_key, curve_secret_key}}
- ``open_vllm`` {name, extra}: the vLLM scheduler's client, built from ``kv_connector_extra_config`` (+ environment)
- ``open_sglang`` {name, extra}: the SGLang backend's client, built from its extra config (+ environment)
- ``roundtrip`` {name, tenant, n, seed, many}: namespace (cached HELLO), PUT n blocks, GET them back, LOOKUP
  (``many``: through put_many / get_many, pipelined batches of 4 blocks)
- ``try`` {name, op, tenant | ns, seed}: one hello / lookup / get / put / exists / delete / stats
- ``auth_int_ts`` {name}: AUTH whose ``ts`` is a msgpack integer (what most non-JS encoders send)
- ``await_reconnect`` {name, forget}: wait until the socket has a new connection (restarted sidecar); with
  ``forget`` pretend it went unnoticed (white box: the next request then meets KVS_UNAUTHENTICATED)
- ``x25519`` {pairs}: RFC 7748 vectors, public keys against libzmq's, shared secrets of the given key pairs
- ``key_formats`` {n}: n random key pairs written in every key file format and read back
- ``close`` {name}
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
import traceback
from types import SimpleNamespace
from typing import Any, Dict

import zmq
from zmq.utils import z85

from kvstash.auth import auth_proof, curve_shared, load_key, token_id, x25519
from kvstash.client import KvstashClient
from kvstash.errors import KvstashError

clients: Dict[str, Any] = {}
owners: Dict[str, Any] = {}  # adapter objects to close with their client


def desc(tenant: str) -> Dict[str, Any]:
    return {"model": "m", "engine": "vllm", "layout": "default", "tenant": tenant,
            "tp_rank": 0, "tp_size": 1, "pp_rank": 0, "pp_size": 1}


def keys_of(seed: int, n: int):
    return [hashlib.sha256(f"{seed}:{i}".encode()).digest() for i in range(n)]


def block_of(key: bytes, size: int = 256) -> bytes:
    return (key * (size // 32 + 1))[:size]


def cmd_open(c: Dict[str, Any]) -> Dict[str, Any]:
    cl = KvstashClient(c["endpoint"], timeout_ms=c.get("timeout_ms", 3000), client_name="auth-test", **c.get("creds", {}))
    clients[c["name"]] = cl
    return {"routing_id": cl._routing_id.hex()}


def cmd_open_vllm(c: Dict[str, Any]) -> Dict[str, Any]:
    from kvstash.vllm_scheduler import SchedulerSide
    from kvstash.vllm_settings import ConnectorSettings

    settings = ConnectorSettings.from_extra(c["extra"])
    side = SchedulerSide(settings, 16, [desc("a")], True, True)
    side.client.timeout_ms = 3000  # the lookup default (100 ms) is too tight for a loaded test machine
    clients[c["name"]], owners[c["name"]] = side.client, side
    return {"routing_id": side.client._routing_id.hex(), "settings_repr_has_token": any(v and v in repr(settings) for v in settings.auth.values())}


def cmd_open_sglang(c: Dict[str, Any]) -> Dict[str, Any]:
    from kvstash.sglang import KvstashHiCacheStorage

    cfg = SimpleNamespace(extra_config=c["extra"], model_name="m", tp_rank=0, tp_size=1, is_mla_model=False)
    backend = KvstashHiCacheStorage(cfg)
    exists = backend.batch_exists(["00" * 32])  # one EXISTS through the backend's own (authenticated) client
    cl = backend._clients.get()
    clients[c["name"]], owners[c["name"]] = cl, backend
    return {"routing_id": cl._routing_id.hex(), "exists": exists, "errors": backend.stats["errors"],
            "last_error": backend.last_error}


def cmd_roundtrip(c: Dict[str, Any]) -> Dict[str, Any]:
    cl: KvstashClient = clients[c["name"]]
    keys = keys_of(c["seed"], c["n"])
    ns = cl.namespace(desc(c["tenant"]))
    if c.get("many"):
        put = cl.put_many(ns, keys, [block_of(k) for k in keys], max_batch_bytes=4 * 256)
        got = cl.get_many(ns, keys, max_batch_keys=4)
    else:
        put = cl.put(ns, keys, [block_of(k) for k in keys])
        got = cl.get(ns, keys)
    equal = all(g is not None and bytes(g) == block_of(k) for g, k in zip(got, keys))
    return {"ns": ns, "put": put, "equal": equal, "hit": cl.lookup(ns, keys).hit,
            "principal": cl.principal, "tenants": cl.tenants}


def cmd_try(c: Dict[str, Any]) -> Dict[str, Any]:
    cl: KvstashClient = clients[c["name"]]
    op = c["op"]
    keys = keys_of(c.get("seed", 0), 2)
    if op == "hello":
        return {"ns": cl.hello(desc(c["tenant"]))}
    if op == "stats":
        return {"stats": bool(cl.stats())}
    ns = c["ns"]
    if op == "lookup":
        return {"hit": cl.lookup(ns, keys).hit}
    if op == "get":
        return {"found": sum(g is not None for g in cl.get(ns, keys))}
    if op == "put":
        return {"put": cl.put(ns, keys, [b"forged" * 40 for _ in keys])}
    if op == "exists":
        return {"prefix": cl.exists(ns, keys).prefix}
    if op == "delete":
        return {"deleted": cl.delete(ns, keys)}
    raise ValueError(f"unknown op {op}")


def cmd_auth_int_ts(c: Dict[str, Any]) -> Dict[str, Any]:
    cl: KvstashClient = clients[c["name"]]
    token = c["token"]
    ts = int(time.time() * 1000)
    r = cl.request({"op": "AUTH", "method": "token", "key": token_id(token), "ts": ts,
                    "proof": auth_proof(token.encode(), cl._routing_id, ts)})
    return {"principal": r.header.get("principal")}


def cmd_await_reconnect(c: Dict[str, Any]) -> Dict[str, Any]:
    cl: KvstashClient = clients[c["name"]]
    mon = cl._mon
    end = time.monotonic() + c.get("within_ms", 5000) / 1000
    while True:
        mon.poll()
        if mon.handshakes > (cl._auth_at or 0):
            break
        if time.monotonic() > end:
            raise KvstashError("KVS_TIMEOUT", "no new connection to the restarted sidecar")
        time.sleep(0.02)
    if c.get("forget"):
        cl._auth_at = mon.handshakes
    return {"handshakes": mon.handshakes}


def cmd_x25519(c: Dict[str, Any]) -> Dict[str, Any]:
    # RFC 7748 §5.2: one step, and 1000 iterations of k, u = X25519(k, u), k from k = u = 9.
    k = bytes.fromhex("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4")
    u = bytes.fromhex("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c")
    one = x25519(k, u).hex() == "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552"
    k = u = (9).to_bytes(32, "little")
    for _ in range(1000):
        k, u = x25519(k, u), k
    iterated = k.hex() == "684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51"
    base = (9).to_bytes(32, "little")
    publics = 0
    for _ in range(20):
        pub, sec = zmq.curve_keypair()
        publics += z85.encode(x25519(z85.decode(sec), base)) == pub
    shared = [curve_shared(p["secret"], p["public"]).hex() for p in c.get("pairs", [])]
    return {"rfc_one": one, "rfc_1000": iterated, "libzmq_publics": publics, "shared": shared}


def cmd_key_formats(c: Dict[str, Any]) -> Dict[str, Any]:
    """Random key pairs (and keys starting with the z85 characters that look like syntax) written in every key
    file format, read back: a bare key, @file with one key, keygen text, keygen JSON, ZeroMQ certificate."""
    pairs = [tuple(k.decode() for k in zmq.curve_keypair()) for _ in range(c["n"])]
    pairs += [(ch + pub[1:], sec) for ch in "{@ps#[" for pub, sec in [tuple(k.decode() for k in zmq.curve_keypair())]]
    bad = []
    with tempfile.TemporaryDirectory() as d:
        def put(name: str, text: str) -> str:
            p = os.path.join(d, name)
            with open(p, "w") as f:
                f.write(text)
            return p
        for pub, sec in pairs:
            one = put("one", pub + "\n")
            kg = put("kg", f"public {pub}\nsecret {sec}\n")
            js = put("js", json.dumps({"publicKey": pub, "secretKey": sec}) + "\n")
            zc = put("zc", f'curve\n    public-key = "{pub}"\n    secret-key = "{sec}"\n')
            got = [load_key(pub, "public", "k"), load_key("@" + one, "public", "k"), load_key("@" + kg, "public", "k"),
                   load_key(kg, "secret", "k"), load_key("@" + js, "secret", "k"), load_key(zc, "public", "k"),
                   load_key(zc, "secret", "k")]
            if got != [pub, pub, pub, sec, sec, pub, sec]:
                bad.append(pub)
    return {"checked": len(pairs), "bad": bad}


def cmd_close(c: Dict[str, Any]) -> Dict[str, Any]:
    owner = owners.pop(c["name"], None)
    cl = clients.pop(c["name"], None)
    if owner is not None:
        owner.close()
    if cl is not None:
        cl.close()
    return {}


COMMANDS = {n[4:]: f for n, f in dict(globals()).items() if n.startswith("cmd_")}


def main() -> None:
    for line in sys.stdin:
        if not line.strip():
            continue
        c = json.loads(line)
        t0 = time.monotonic()
        try:
            out = {"ok": True, **COMMANDS[c["cmd"]](c)}
        except KvstashError as err:
            out = {"ok": False, "code": err.code, "message": err.message}
        except Exception as err:  # a harness bug: report it, keep going
            out = {"ok": False, "code": "HARNESS", "message": f"{type(err).__name__}: {err}", "trace": traceback.format_exc()}
        out["ms"] = round((time.monotonic() - t0) * 1000, 1)
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()
    for name in list(clients):
        cmd_close({"name": name})


if __name__ == "__main__":
    main()
