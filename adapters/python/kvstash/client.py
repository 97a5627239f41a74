"""Python client for kvstash wire protocol v1 — the counterpart of connector/client.ts.

Transport: one ZeroMQ DEALER per client. Frame 0 of every message is a msgpack map (the header); block bytes
travel as separate raw frames, sent with ``copy=False`` (zero-copy for frames above pyzmq's copy threshold:
the buffer — bytes, bytearray, memoryview, numpy array — must stay unmodified until the send completes;
pyzmq keeps a reference to it). Received block frames are returned as memoryviews over ZeroMQ's buffers.

Stable API (the vLLM and SGLang adapters build on it; keep it backwards compatible):

``KvstashClient(endpoint, timeout_ms=5000, client_name="kvstash-py", context=None, configure=None,
token=None, curve_server_key=None, curve_public_key=None, curve_secret_key=None)``
  - ``hello(desc) -> ns`` / ``namespace(desc) -> ns`` (HELLO once per descriptor, cached; ``desc`` is a dict
    with the NS_FIELDS of kvstash.hashing or a ``Namespace``)
  - ``lookup(ns, keys, prefetch=False, lease=None, lease_ms=None) -> LookupResult(hit, tiers, load_ms)`` (``lease``:
    pin the leading hits under that tag for ``lease_ms``, 0 releases)
  - ``put(ns, keys, blocks, sums=None) -> list[int]`` (PUT_STORED / PUT_PRESENT / PUT_DROPPED / PUT_BAD_CHECKSUM)
  - ``get(ns, keys) -> list[memoryview | None]`` (None = miss)
  - ``exists(ns, keys) -> ExistsResult(exists, prefix)``, ``delete(ns, keys) -> int``
  - ``stats() -> dict``, ``ping() -> str``
  - batch helpers ``put_many(ns, keys, blocks)`` / ``get_many(ns, keys)``: split into requests under the
    sidecar's limits and keep a window of them in flight (pipelined ids); ``get_many(..., into=buffers)`` copies
    each value into the caller's buffer (one per key; a value that does not fit is a miss)
  - low level: ``submit(header, blocks) -> id`` then ``wait(id) -> Reply``; ``request(header, blocks)``
  - every call takes ``timeout_ms=None`` (default: the client's) — the deadline of the whole call
  - ``authenticate(timeout_ms=None) -> dict`` (principal, tenants): AUTH now (otherwise done before the first
    request that needs it); ``principal`` / ``tenants`` attributes after it
  - ``close()``; the client is also a context manager
  ``keys`` is either bytes (n × 32, concatenated) or a sequence of 32-byte hashes.

Errors: everything raises ``KvstashError`` with a stable ``code`` (kvstash.errors). No answer before the
deadline → ``KVS_TIMEOUT`` (a late reply is dropped); no connection to send on before the deadline (sidecar
absent) → ``KVS_UNAVAILABLE``; an ERR reply → the sidecar's code. ``KVS_NS_UNKNOWN`` from the sidecar (it
restarted without persisting namespaces) triggers one re-HELLO and one retry, within the same deadline.

Authentication (sidecars with ``authTokens`` / ``curveClients``; recipe and key formats in kvstash.auth): with a
``token`` or CURVE client keys the client sets a random routing id, the CURVE options when ``curve_server_key`` is
given, and sends one ``AUTH`` before its first request (not PING), again after every new connection (a reconnect:
the sidecar may have restarted) and once more, then retrying the request, when an answer is ``KVS_UNAUTHENTICATED``.
``curve_server_key`` alone (or with a token) encrypts with a throw-away key pair. Bad settings raise ``KVS_CONFIG``
in the constructor. A refused key or proof raises ``KVS_UNAUTHENTICATED`` (a CURVE key refused at the handshake:
as soon as the refusal is seen, not at the deadline; so does a handshake that fails for want of the right
``curve_server_key`` or because one side speaks CURVE and the other not); a tenant not granted raises
``KVS_PERMISSION_DENIED``. A sidecar with auth off answers AUTH with ``KVS_UNKNOWN_OP``: accepted (principal None).

Thread-safety: a client is NOT thread-safe — ZeroMQ sockets must not be used from two threads at once. A
client binds to the first thread that uses it and raises ``KVS_INTERNAL`` when another thread calls it. Use
one client per thread (they are cheap: one socket each); ``ThreadLocalClients`` hands each thread its own.

Reconnects: ZeroMQ reconnects by itself (100 ms, backing off to 2 s). ``IMMEDIATE`` is set, so while no
connection exists nothing is queued: a send waits for a connection until the call's deadline and then raises
``KVS_UNAVAILABLE``. Requests in flight when the sidecar dies are answered by ``KVS_TIMEOUT`` at their
deadline. Nothing is retried except the re-HELLO above: callers (the engine connectors) treat any error as a
cache miss and recompute.
"""
from __future__ import annotations

import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union, cast

import msgpack
import zmq

from . import errors as E
from .errors import KvstashError
from .arena import ArenaClientMixin, ArenaMap, LeasedGet, copy_out, fill, shm_wanted
from .auth import AUTH_OP, Credentials, HandshakeMonitor
from .hashing import NS_FIELDS, namespace_id

PROTOCOL_VERSION = 1
KEY_BYTES = 32
PUT_STORED, PUT_PRESENT, PUT_DROPPED, PUT_BAD_CHECKSUM = 0, 1, 2, 3

Keys = Union[bytes, bytearray, memoryview, Sequence[bytes]]
Buffer = Any  # anything exposing the buffer protocol


@dataclass
class Reply:
    header: Dict[str, Any]
    blocks: List[memoryview] = field(default_factory=list)


@dataclass
class LookupResult:
    hit: int
    tiers: Dict[str, int]
    load_ms: Dict[str, float]
    #: per tier: leading blocks whose fastest copy is in that tier or a faster one (sidecars before 0.2: absent)
    depth: Dict[str, int] = field(default_factory=dict)


@dataclass
class ExistsResult:
    exists: List[bool]
    prefix: int


class _AuthRefused(KvstashError):
    """KVS_UNAUTHENTICATED from this client's own AUTH or handshake: not retried by another AUTH."""


def default_endpoint() -> str:
    """``$KVSTASH_ENDPOINT``, else the sidecar's default ipc socket ``ipc://$XDG_RUNTIME_DIR/kvstash.sock`` (or the temp dir)."""
    env = os.environ.get("KVSTASH_ENDPOINT")
    if env:
        return env
    run = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return f"ipc://{os.path.join(run, 'kvstash.sock')}"


def keys_field(keys: Keys) -> bytes:
    b = bytes(keys) if isinstance(keys, (bytes, bytearray, memoryview)) else b"".join(bytes(k) for k in keys)
    if len(b) % KEY_BYTES:
        raise KvstashError(E.KEY_LENGTH, f"keys are {len(b)} bytes, not a multiple of {KEY_BYTES}")
    return b


def _nbytes(b: Buffer) -> int:
    return memoryview(b).nbytes


def _descriptor(desc: Any) -> Dict[str, Any]:
    if isinstance(desc, Mapping):
        return {f: desc[f] for f in NS_FIELDS}
    return {f: getattr(desc, f) for f in NS_FIELDS}


class KvstashClient(ArenaClientMixin):
    def __init__(
        self,
        endpoint: str,
        timeout_ms: float = 5000,
        client_name: str = "kvstash-py",
        context: Optional[zmq.Context] = None,
        configure: Optional[Callable[[zmq.Socket], None]] = None,
        token: Optional[str] = None,
        curve_server_key: Optional[str] = None,
        curve_public_key: Optional[str] = None,
        curve_secret_key: Optional[str] = None,
        shm: Optional[bool] = None,
    ) -> None:
        self.endpoint = endpoint
        self.timeout_ms = timeout_ms
        self.client_name = client_name
        self.limits: Dict[str, int] = {}
        self.principal: Optional[str] = None
        self.tenants: List[str] = []
        self._creds = Credentials.resolve(token, curve_server_key, curve_public_key, curve_secret_key)
        self._ctx = context or zmq.Context.instance()
        s = self._ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.IMMEDIATE, 1)
        s.setsockopt(zmq.SNDHWM, 100_000)
        s.setsockopt(zmq.RCVHWM, 100_000)
        s.setsockopt(zmq.RECONNECT_IVL, 100)
        s.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        self._mon: Optional[HandshakeMonitor] = None
        if self._creds is not None:
            s.setsockopt(zmq.ROUTING_ID, os.urandom(16).hex().encode("ascii"))
            self._creds.configure(s)
            self._mon = HandshakeMonitor(s, endpoint, self._creds)
        if configure is not None:
            configure(s)
        self._routing_id = cast(bytes, s.getsockopt(zmq.ROUTING_ID)) if self._creds is not None else b""  # a bytes option
        s.connect(endpoint)
        self._sock = s
        self._auth_at: Optional[int] = None  # HandshakeMonitor.handshakes when AUTH last succeeded
        self._next_id = 1
        self._pending: Dict[int, str] = {}
        self._replies: Dict[int, Reply] = {}
        self._hellos: Dict[str, Dict[str, Any]] = {}
        self._owner: Optional[int] = None
        self._closed = False
        # Same-host arena (kvstash.arena): asked for in every HELLO unless shm=False / KVSTASH_SHM=0.
        self._shm = shm_wanted() if shm is None else bool(shm)
        self._maps: Dict[str, ArenaMap] = {}  # arena file path → mapping
        self._ns_arena: Dict[str, ArenaMap] = {}  # namespace id → the attached arena
        self._reattach_at: Dict[str, float] = {}
        self.arena_limits: Dict[str, float] = {}

    # ---- plumbing ---------------------------------------------------------------------------------------

    def _deadline(self, timeout_ms: Optional[float]) -> float:
        return time.monotonic() + (self.timeout_ms if timeout_ms is None else timeout_ms) / 1000.0

    def _check(self) -> None:
        if self._closed:
            raise KvstashError(E.UNAVAILABLE, "client is closed")
        me = threading.get_ident()
        if self._owner is None:
            self._owner = me
        elif self._owner != me:
            raise KvstashError(E.INTERNAL, "KvstashClient used from a second thread; use one client per thread")

    def submit(self, header: Mapping[str, Any], blocks: Sequence[Buffer] = (), deadline: Optional[float] = None) -> int:
        """Send one request (``v`` and ``id`` are filled in); returns its id for ``wait``."""
        self._check()
        deadline = self._deadline(None) if deadline is None else deadline
        if self._mon is not None and header.get("op") not in (AUTH_OP, "PING"):
            self._ensure_auth(self._mon, deadline)
        rid = self._next_id
        self._next_id = 1 if rid >= 0xFFFFFFFF else rid + 1
        frames: List[Any] = [msgpack.packb({**header, "v": PROTOCOL_VERSION, "id": rid}, use_bin_type=True)]
        frames.extend(blocks)
        while True:
            try:
                self._sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
                break
            except zmq.Again:
                self._refused_check()
                left = deadline - time.monotonic()
                if left <= 0:
                    raise KvstashError(E.UNAVAILABLE, f"{header.get('op')}: no connection to {self.endpoint} before the deadline") from None
                zmq.select([], [self._sock], [], min(left, 0.05))
            except zmq.ZMQError as err:
                raise KvstashError(E.UNAVAILABLE, f"send to {self.endpoint} failed: {err}", cause=err) from None
        self._pending[rid] = str(header.get("op"))
        return rid

    def send_only(self, header: Mapping[str, Any]) -> None:
        """Send a request whose reply nobody waits for (RELEASE); its reply is dropped when it comes."""
        try:
            rid = self._next_id
            self._next_id = 1 if rid >= 0xFFFFFFFF else rid + 1
            self._sock.send_multipart([msgpack.packb({**header, "v": PROTOCOL_VERSION, "id": rid}, use_bin_type=True)], flags=zmq.NOBLOCK)
        except zmq.ZMQError:
            pass  # the sidecar ends the lease by itself after lease_ms

    def _receive(self, timeout_s: float) -> None:
        if not self._sock.poll(max(0, int(timeout_s * 1000)), zmq.POLLIN):
            return
        while True:
            try:
                frames = self._sock.recv_multipart(flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            try:
                h = msgpack.unpackb(frames[0].bytes, raw=False)
                rid = h["id"]
            except Exception:  # undecodable reply: nothing to match it to
                continue
            if rid in self._pending:
                self._replies[rid] = Reply(h, [f.buffer for f in frames[1:]])

    def wait(self, rid: int, deadline: Optional[float] = None) -> Reply:
        """Wait for the reply to ``rid``; raise its error, or KVS_TIMEOUT at the deadline."""
        self._check()
        deadline = self._deadline(None) if deadline is None else deadline
        while rid not in self._replies:
            left = deadline - time.monotonic()
            if left <= 0:
                op = self._pending.pop(rid, "?")
                raise KvstashError(E.TIMEOUT, f"{op} #{rid} got no reply before the deadline from {self.endpoint}")
            self._receive(left)
        self._pending.pop(rid, None)
        r = self._replies.pop(rid)
        if r.header.get("status") != "OK":
            raise KvstashError(str(r.header.get("code") or E.INTERNAL), str(r.header.get("message") or "error"))
        return r

    def request(self, header: Mapping[str, Any], blocks: Sequence[Buffer] = (), timeout_ms: Optional[float] = None) -> Reply:
        deadline = self._deadline(timeout_ms)
        return self.wait(self.submit(header, blocks, deadline), deadline)

    def _call(self, header: Mapping[str, Any], blocks: Sequence[Buffer], deadline: float) -> Reply:
        """One request. ``KVS_UNAUTHENTICATED`` (the sidecar lost the binding: it restarted) → one AUTH, and
        ``KVS_NS_UNKNOWN`` → one re-HELLO, each followed by a retry within the same deadline."""
        reauth = self._creds is not None and self._creds.authenticates
        rehello = True
        while True:
            try:
                return self.wait(self.submit(header, blocks, deadline), deadline)
            except KvstashError as err:
                ns = header.get("ns")
                if err.code == E.UNAUTHENTICATED and reauth and not isinstance(err, _AuthRefused):
                    reauth = False
                    self._authenticate(deadline)
                elif err.code == E.NS_UNKNOWN and rehello and ns in self._hellos:
                    rehello = False
                    self._hello(self._hellos[str(ns)], deadline)
                else:
                    raise

    def _with_ns(self, ns: str, header: Dict[str, Any], blocks: Sequence[Buffer], deadline: float) -> Reply:
        return self._call({**header, "ns": ns}, blocks, deadline)

    # ---- authentication (kvstash.auth) ------------------------------------------------------------------

    def _refused_check(self) -> None:
        """Raised while no connection exists and the last handshake failed: no point waiting for the deadline."""
        if self._mon is not None:
            self._mon.poll()
            if self._mon.error is not None:
                raise _AuthRefused(E.UNAUTHENTICATED, self._mon.error)

    def _ensure_auth(self, mon: HandshakeMonitor, deadline: float) -> None:
        if mon.pending():
            mon.poll()
        if mon.creds.authenticates and self._auth_at != mon.handshakes:
            self._authenticate(deadline)

    def _authenticate(self, deadline: float) -> None:
        creds = self._creds
        assert creds is not None
        try:
            r = self.wait(self.submit(creds.auth_header(self._routing_id), (), deadline), deadline)
        except _AuthRefused:
            raise
        except KvstashError as err:
            if err.code == E.UNKNOWN_OP:  # this sidecar has auth off: nothing to prove, everything allowed
                self.principal, self.tenants = None, ["*"]
            elif err.code in (E.UNAUTHENTICATED, E.BAD_FIELD):
                raise _AuthRefused(E.UNAUTHENTICATED, f"AUTH as {creds.principal_hint} refused by the sidecar at "
                                   f"{self.endpoint}: {err.message}", cause=err) from None
            else:
                raise
        else:
            self.principal = r.header.get("principal")
            self.tenants = [str(t) for t in r.header.get("tenants") or []]
        if self._mon is not None:
            self._mon.poll()
            self._auth_at = self._mon.handshakes

    def authenticate(self, timeout_ms: Optional[float] = None) -> Dict[str, Any]:
        """Send AUTH now; returns ``{"principal", "tenants"}``. KVS_CONFIG without a token or CURVE client key."""
        self._check()
        if self._creds is None or not self._creds.authenticates:
            raise KvstashError(E.CONFIG, "this client has no token and no CURVE client key to authenticate with")
        self._authenticate(self._deadline(timeout_ms))
        return {"principal": self.principal, "tenants": list(self.tenants)}

    # ---- operations -------------------------------------------------------------------------------------

    def _hello(self, desc: Dict[str, Any], deadline: float) -> str:
        h: Dict[str, Any] = {"op": "HELLO", "client": self.client_name, "namespace": desc}
        if self._shm:
            h["shm"] = True
        r = self._call(h, (), deadline)
        ns = str(r.header["ns"])
        self._hellos[ns] = desc
        self.limits = dict(r.header.get("limits") or {})
        self._attach(ns, r.header.get("arena"), deadline)
        return ns

    def hello(self, desc: Any, timeout_ms: Optional[float] = None) -> str:
        return self._hello(_descriptor(desc), self._deadline(timeout_ms))

    def namespace(self, desc: Any, timeout_ms: Optional[float] = None) -> str:
        """Register ``desc`` (HELLO) unless already done, and return its namespace id."""
        d = _descriptor(desc)
        ns = namespace_id(d)
        return ns if ns in self._hellos else self._hello(d, self._deadline(timeout_ms))

    def lookup(self, ns: str, keys: Keys, prefetch: bool = False, timeout_ms: Optional[float] = None,
               lease: Optional[str] = None, lease_ms: Optional[float] = None) -> LookupResult:
        h: Dict[str, Any] = {"op": "LOOKUP", "keys": keys_field(keys)}
        if prefetch:
            h["prefetch"] = True
        if lease is not None:  # pin the leading hits under this tag for lease_ms (0: release); protocol/README.md
            h["lease"], h["lease_ms"] = lease, int(max(0, lease_ms or 0))
        r = self._with_ns(ns, h, (), self._deadline(timeout_ms)).header
        return LookupResult(int(r["hit"]), dict(r.get("tiers") or {}), dict(r.get("load_ms") or {}), dict(r.get("depth") or {}))

    def put(self, ns: str, keys: Keys, blocks: Sequence[Buffer], sums: Optional[Sequence[str]] = None,
            timeout_ms: Optional[float] = None) -> List[int]:
        h: Dict[str, Any] = {"op": "PUT", "keys": keys_field(keys), "sizes": [_nbytes(b) for b in blocks]}
        if sums is not None:
            h["sums"] = list(sums)
        return list(self._with_ns(ns, h, blocks, self._deadline(timeout_ms)).header["results"])

    def get(self, ns: str, keys: Keys, timeout_ms: Optional[float] = None) -> List[Optional[memoryview]]:
        if ns in self._ns_arena:
            return copy_out(self.lease_get(ns, keys, timeout_ms))  # type: ignore[arg-type]
        r = self._with_ns(ns, {"op": "GET", "keys": keys_field(keys)}, (), self._deadline(timeout_ms))
        return _spread(r)

    def exists(self, ns: str, keys: Keys, timeout_ms: Optional[float] = None) -> ExistsResult:
        r = self._with_ns(ns, {"op": "EXISTS", "keys": keys_field(keys)}, (), self._deadline(timeout_ms)).header
        return ExistsResult([bool(x) for x in r["exists"]], int(r["prefix"]))

    def delete(self, ns: str, keys: Keys, timeout_ms: Optional[float] = None) -> int:
        return int(self._with_ns(ns, {"op": "DELETE", "keys": keys_field(keys)}, (), self._deadline(timeout_ms)).header["deleted"])

    def stats(self, timeout_ms: Optional[float] = None) -> Dict[str, Any]:
        return dict(self._call({"op": "STATS"}, (), self._deadline(timeout_ms)).header["stats"])

    def connected(self) -> bool:
        """True when ZeroMQ holds a connection to send on (``IMMEDIATE``: without one nothing could be sent). A
        sidecar that died is seen here as soon as ZeroMQ sees its socket close, before any deadline."""
        try:
            return bool(int(self._sock.getsockopt(zmq.EVENTS)) & zmq.POLLOUT)  # type: ignore[arg-type]
        except zmq.ZMQError:
            return False

    def ping(self, timeout_ms: Optional[float] = None) -> str:
        return str(self.request({"op": "PING"}, (), timeout_ms).header.get("server"))

    # ---- batch helpers ----------------------------------------------------------------------------------

    def put_many(self, ns: str, keys: Keys, blocks: Sequence[Buffer], max_batch_bytes: int = 64 << 20,
                 window: int = 4, timeout_ms: Optional[float] = None) -> List[int]:
        """PUT many blocks as several pipelined requests. A batch refused with KVS_BUSY counts as DROPPED."""
        kb = keys_field(keys)
        n = len(kb) // KEY_BYTES
        if n != len(blocks):
            raise KvstashError(E.FRAME_MISMATCH, f"{n} keys but {len(blocks)} blocks")
        cap = min(max_batch_bytes, int(self.limits.get("max_message_bytes", max_batch_bytes)) - 65536)
        batches, start, size = [], 0, 0
        for i, b in enumerate(blocks):
            nb = _nbytes(b)
            if i > start and size + nb > cap:
                batches.append((start, i))
                start, size = i, 0
            size += nb
        if n:
            batches.append((start, n))
        deadline = self._deadline(timeout_ms)
        results = [PUT_DROPPED] * n

        def send(a: int, b: int) -> int:
            h = {"op": "PUT", "ns": ns, "keys": kb[a * KEY_BYTES : b * KEY_BYTES], "sizes": [_nbytes(x) for x in blocks[a:b]]}
            return self.submit(h, blocks[a:b], deadline)

        self._windowed(ns, batches, send, deadline, window, lambda a, b, r: results.__setitem__(slice(a, b), r.header["results"]))
        return results

    def get_many(self, ns: str, keys: Keys, max_batch_keys: int = 64, window: int = 4,
                 timeout_ms: Optional[float] = None, into: Optional[Sequence[Buffer]] = None) -> List[Optional[memoryview]]:
        """GET many keys as several pipelined requests; one entry per key, None for a miss.

        ``into``: one writable buffer per key (e.g. slices of a host pool the caller reuses); each value is copied
        into the front of its buffer and the entry is that filled part; a value larger than its buffer is a miss.
        Without it every value lands in fresh memory, which costs page faults: on VMs where a fault is slow
        (bench/arena.py measures it) reused buffers are several times faster for values under a few MiB."""
        kb = keys_field(keys)
        n = len(kb) // KEY_BYTES
        if into is not None and len(into) != n:
            raise KvstashError(E.BAD_FIELD, f"get_many: {len(into)} buffers for {n} keys")
        batches = [(a, min(n, a + max_batch_keys)) for a in range(0, n, max(1, max_batch_keys))]
        deadline = self._deadline(timeout_ms)
        out: List[Optional[memoryview]] = [None] * n

        m = self._ns_arena.get(ns)

        def send(a: int, b: int) -> int:
            h: Dict[str, Any] = {"op": "GET", "ns": ns, "keys": kb[a * KEY_BYTES : b * KEY_BYTES]}
            if m is not None:
                h["lease"] = True
            return self.submit(h, (), deadline)

        def take(a: int, b: int, r: Reply) -> None:
            dst = None if into is None else into[a:b]
            if m is None:
                got = _spread(r)
                out[a:b] = got if dst is None else [None if v is None else fill(d, v) for v, d in zip(got, dst)]
            else:
                out[a:b] = copy_out(LeasedGet(self, m, ns, kb[a * KEY_BYTES : b * KEY_BYTES], r.header, r.blocks), dst)

        self._windowed(ns, batches, send, deadline, window, take)
        return out

    def _windowed(self, ns: str, batches, send, deadline: float, window: int, take) -> None:
        inflight: List[tuple] = []
        i = 0
        # A restarted sidecar refuses every batch in flight: the first refusal re-AUTHs (or re-HELLOs) once, and
        # batches sent before that fix are simply sent again.
        can_fix = {E.UNAUTHENTICATED: self._creds is not None and self._creds.authenticates, E.NS_UNKNOWN: ns in self._hellos}
        sent_before_fix: Dict[str, set] = {E.UNAUTHENTICATED: set(), E.NS_UNKNOWN: set()}
        try:
            while i < len(batches) or inflight:
                while i < len(batches) and len(inflight) < max(1, window):
                    a, b = batches[i]
                    inflight.append((send(a, b), a, b))
                    i += 1
                rid, a, b = inflight.pop(0)
                try:
                    take(a, b, self.wait(rid, deadline))
                except KvstashError as err:
                    code = err.code
                    if code == E.BUSY:
                        continue
                    if code not in sent_before_fix or isinstance(err, _AuthRefused):
                        raise
                    if rid not in sent_before_fix[code]:
                        if not can_fix[code]:
                            raise
                        can_fix[code] = False
                        if code == E.UNAUTHENTICATED:
                            self._authenticate(deadline)
                        else:
                            self._hello(self._hellos[ns], deadline)
                        sent_before_fix[code] = {r for r, _a, _b in inflight}
                    inflight.append((send(a, b), a, b))
        finally:  # abandoned requests: forget them, and any reply that already came
            for rid, _a, _b in inflight:
                self._pending.pop(rid, None)
                self._replies.pop(rid, None)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pending.clear()
        self._replies.clear()
        if self._mon is not None:
            self._mon.close()
        self._sock.close(linger=0)
        for m in self._maps.values():
            m.close()
        self._maps.clear()
        self._ns_arena.clear()

    def __enter__(self) -> "KvstashClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _spread(r: Reply) -> List[Optional[memoryview]]:
    j = 0
    out: List[Optional[memoryview]] = []
    for s in r.header["sizes"]:
        if isinstance(s, int) and s >= 0:
            out.append(r.blocks[j])
            j += 1
        else:
            out.append(None)
    return out


class ThreadLocalClients:
    """One KvstashClient per thread, created on first use with the same options."""

    def __init__(self, endpoint: str, **opts: Any) -> None:
        self.endpoint, self.opts = endpoint, opts
        self._local = threading.local()
        self._all: List[KvstashClient] = []
        self._lock = threading.Lock()

    def get(self) -> KvstashClient:
        c = getattr(self._local, "client", None)
        if c is None:
            c = KvstashClient(self.endpoint, **self.opts)
            self._local.client = c
            with self._lock:
                self._all.append(c)
        return c

    def close_current(self) -> None:
        """Close the calling thread's client, if it has one (call it from that thread)."""
        c = getattr(self._local, "client", None)
        if c is not None:
            self._local.client = None
            with self._lock:
                if c in self._all:
                    self._all.remove(c)
            c.close()

    def close_all(self) -> None:
        """Close every thread's client. Only safe once those threads no longer use them."""
        with self._lock:
            for c in self._all:
                try:
                    c.close()
                except Exception:
                    pass
            self._all.clear()
