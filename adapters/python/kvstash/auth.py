"""Data-socket authentication of the Python client — the counterpart of connector/control/auth-client.ts.

Recipe (docs/control-plane.md, "Data socket: CURVE, ZAP and AUTH"; verified by connector/control/data-auth.ts):

- The DEALER gets a random routing id R before connecting (16 random bytes as 32 hex chars, so never a 0 first
  byte) and, with CURVE, the options ``CURVE_SERVERKEY`` / ``CURVE_PUBLICKEY`` / ``CURVE_SECRETKEY``.
- It then sends one ``{op: "AUTH", method, key, ts, proof}``, ``ts`` = now in ms, and
  ``proof = HMAC-SHA256(secret, "kvstash-auth-v1\\n" + hex(R) + "\\n" + str(ts))``:
  ``method "token"``: ``key = "token:" + sha256(token).hex()[:16]``, ``secret`` = the token (UTF-8);
  ``method "curve"``: ``key`` = the client's z85 public key, ``secret`` = X25519(client secret, server public).
  A token wins when both are given (as in the Node client).
- X25519 is computed here with integers (RFC 7748 §5), stdlib only: Python's big integers are not constant-time,
  so the result is computed once per key pair and process (cached) — one timing sample per process, off the
  network path. The shared secret never leaves the process.

Key values (every ``curve_*`` argument): a 40-char z85 key; ``@path`` or a path to a file holding either one key
on its first line, the output of ``kvstash keygen`` (``public …`` / ``secret …`` lines) or ``kvstash keygen
--json``, or a ZeroMQ certificate (``public-key = "…"``). Tokens: the token, or ``@path`` (first line).

Environment fallbacks (``options_from_extra``; an extra-config key that is present, even empty, wins):
``KVSTASH_TOKEN``, ``KVSTASH_CURVE_SERVER_KEY``, ``KVSTASH_CURVE_CLIENT_SECRET_KEY``,
``KVSTASH_CURVE_CLIENT_PUBLIC_KEY``. (Not ``KVSTASH_CURVE_SECRET_KEY``: that is the sidecar's own key setting.)

Errors: anything wrong in the settings raises ``KvstashError`` with code ``KVS_CONFIG``.
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import json
import os
import re
import time
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional

import zmq

from . import errors as E
from .errors import KvstashError

AUTH_OP = "AUTH"
Z85_CHARS = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"
_Z85_RE = re.compile("^[" + re.escape(Z85_CHARS) + "]{40}$")
_ENV = {"token": "KVSTASH_TOKEN", "curve_server_key": "KVSTASH_CURVE_SERVER_KEY",
        "curve_secret_key": "KVSTASH_CURVE_CLIENT_SECRET_KEY", "curve_public_key": "KVSTASH_CURVE_CLIENT_PUBLIC_KEY"}

# ---- X25519 (RFC 7748 §5) ----------------------------------------------------------------------------------

_P = 2**255 - 19
_A24 = 121665


def x25519(scalar: bytes, u: bytes) -> bytes:
    """X25519(k, u) of RFC 7748: 32-byte little-endian scalar (clamped here) and u-coordinate."""
    if len(scalar) != 32 or len(u) != 32:
        raise KvstashError(E.INVALID_ARGUMENT, "x25519 takes a 32-byte scalar and a 32-byte u-coordinate")
    k = bytearray(scalar)
    k[0] &= 248
    k[31] = (k[31] & 127) | 64
    n = int.from_bytes(k, "little")
    x1 = (int.from_bytes(u, "little") & ((1 << 255) - 1)) % _P
    x2, z2, x3, z3, swap = 1, 0, x1, 1, 0
    for t in range(254, -1, -1):
        bit = (n >> t) & 1
        mask = -(swap ^ bit)  # 0 or -1: a branch-free conditional swap
        d = mask & (x2 ^ x3)
        x2, x3 = x2 ^ d, x3 ^ d
        d = mask & (z2 ^ z3)
        z2, z3 = z2 ^ d, z3 ^ d
        swap = bit
        a, b = (x2 + z2) % _P, (x2 - z2) % _P
        aa, bb = a * a % _P, b * b % _P
        e = (aa - bb) % _P
        c, dd = (x3 + z3) % _P, (x3 - z3) % _P
        da, cb = dd * a % _P, c * b % _P
        x3 = (da + cb) ** 2 % _P
        z3 = x1 * ((da - cb) ** 2) % _P
        x2 = aa * bb % _P
        z2 = e * (aa + _A24 * e) % _P
    mask = -swap
    d = mask & (x2 ^ x3)
    x2 ^= d
    d = mask & (z2 ^ z3)
    z2 ^= d
    return (x2 * pow(z2, _P - 2, _P) % _P).to_bytes(32, "little")


def z85_decode(key: str) -> bytes:
    from zmq.utils import z85

    return z85.decode(key.encode("ascii"))


@functools.lru_cache(maxsize=64)
def curve_shared(secret_z85: str, their_public_z85: str) -> bytes:
    """X25519(our z85 secret key, their z85 public key): the same 32 bytes the sidecar computes."""
    return x25519(z85_decode(secret_z85), z85_decode(their_public_z85))


def token_id(token: str) -> str:
    return "token:" + hashlib.sha256(token.encode("utf-8")).hexdigest()[:16]


def auth_proof(secret: bytes, routing_id: bytes, ts_ms: int) -> bytes:
    return hmac.new(secret, f"kvstash-auth-v1\n{routing_id.hex()}\n{int(ts_ms)}".encode("ascii"), hashlib.sha256).digest()


# ---- settings ----------------------------------------------------------------------------------------------


def _read(path: str, what: str) -> str:
    try:
        with open(os.path.expanduser(path), "r", encoding="utf-8") as f:
            return f.read()
    except OSError as err:
        raise KvstashError(E.CONFIG, f"{what}: cannot read {path}: {err.strerror or err}", cause=err) from None


def _key_from_text(text: str, which: str) -> Optional[str]:
    """The ``which`` ("public" / "secret") key in a keys file, or its single unlabeled key."""
    t = text.strip()
    try:  # `kvstash keygen --json` (a bare z85 key may start with "{" too: only a JSON object counts)
        doc = json.loads(t) if t.startswith("{") else None
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        v = doc.get(f"{which}Key")
        return v if isinstance(v, str) else None
    m = re.search(rf"^\s*{which}(?:-key\s*=\s*\"(.{{40}})\"|\s+(\S{{40}})\s*$)", t, re.M)
    if m:
        return m.group(1) or m.group(2)
    first = t.splitlines()[0].strip() if t else ""
    return first if _Z85_RE.match(first) else None


def _as_path(v: str) -> Optional[str]:
    """The file a key setting names, or None when it is a z85 key itself (a key may start with "@" too)."""
    if v.startswith("@") and (not _Z85_RE.match(v) or os.path.isfile(os.path.expanduser(v[1:]))):
        return v[1:]
    return None if _Z85_RE.match(v) else v


def load_key(value: Optional[str], which: str, what: str) -> Optional[str]:
    """A z85 key from a setting value (see the module doc); None when unset."""
    if value is None or str(value).strip() == "":
        return None
    v = str(value).strip()
    path = _as_path(v)
    if path is None:
        return v
    if not v.startswith("@") and not os.path.isfile(os.path.expanduser(path)):
        raise KvstashError(E.CONFIG, f"{what} is neither a 40-char z85 key nor a readable keys file")
    key = _key_from_text(_read(path, what), which)
    if key is None or not _Z85_RE.match(key):
        raise KvstashError(E.CONFIG, f"{what}: {path} holds no 40-char z85 {which} key (write it with `kvstash keygen`)")
    return key


def load_token(value: Optional[str]) -> Optional[str]:
    if value is None or str(value).strip() == "":
        return None
    v = str(value).strip()
    if v.startswith("@"):
        lines = _read(v[1:], "token").splitlines()
        v = lines[0].strip() if lines else ""
    if len(v) < 16:
        raise KvstashError(E.CONFIG, "token: a kvstash token has at least 16 characters (`kvstash keygen --token`)")
    return v


@dataclass(frozen=True)
class Credentials:
    """What a client presents: CURVE keys (z85) and/or a bearer token. Build it with ``Credentials.resolve``."""

    token: Optional[str] = None
    server_key: Optional[str] = None
    public_key: Optional[str] = None
    secret_key: Optional[str] = None
    ephemeral: bool = False  # CURVE key pair made up for encryption only (token or no auth)

    @classmethod
    def resolve(cls, token: Optional[str] = None, curve_server_key: Optional[str] = None,
                curve_public_key: Optional[str] = None, curve_secret_key: Optional[str] = None) -> Optional["Credentials"]:
        """Validate the settings; None when none is given. Raises KVS_CONFIG."""
        tok = load_token(token)
        server = load_key(curve_server_key, "public", "curve_server_key")
        secret = load_key(curve_secret_key, "secret", "curve_secret_key")
        public = load_key(curve_public_key, "public", "curve_public_key")
        if tok is None and server is None and secret is None and public is None:
            return None
        if server is None and (secret or public):
            raise KvstashError(E.CONFIG, "curve_secret_key / curve_public_key need curve_server_key (the sidecar's public key)")
        if public is not None and secret is None:
            raise KvstashError(E.CONFIG, "curve_public_key needs its curve_secret_key")
        ephemeral = False
        if server is not None:
            if not zmq.has("curve"):
                raise KvstashError(E.CONFIG, f"CURVE keys are set but this libzmq ({zmq.zmq_version()}) has no CURVE support")
            if secret is None:  # encryption only; the token (if any) names the principal
                pub_b, sec_b = zmq.curve_keypair()
                public, secret, ephemeral = pub_b.decode(), sec_b.decode(), True
            derived = zmq.curve_public(secret.encode("ascii")).decode("ascii")  # a keys file's public key is optional
            if public is None:
                public = derived
            elif public != derived:
                raise KvstashError(E.CONFIG, "curve_public_key is not the public key of curve_secret_key")
        return cls(tok, server, public, secret, ephemeral)

    @property
    def authenticates(self) -> bool:
        """True when the client proves a principal with AUTH (a token, or its own CURVE key)."""
        return self.token is not None or (self.secret_key is not None and not self.ephemeral)

    @property
    def principal_hint(self) -> str:
        return token_id(self.token) if self.token else f"curve:{self.public_key}"

    def configure(self, sock: zmq.Socket) -> None:
        if self.server_key is not None:
            sock.setsockopt(zmq.CURVE_SERVERKEY, self.server_key.encode("ascii"))
            sock.setsockopt(zmq.CURVE_PUBLICKEY, self.public_key.encode("ascii"))  # type: ignore[union-attr]
            sock.setsockopt(zmq.CURVE_SECRETKEY, self.secret_key.encode("ascii"))  # type: ignore[union-attr]

    def shared_secret(self) -> bytes:
        return curve_shared(self.secret_key, self.server_key)  # type: ignore[arg-type]

    def auth_header(self, routing_id: bytes, now_ms: Optional[int] = None) -> Dict[str, Any]:
        ms = int(time.time() * 1000) if now_ms is None else int(now_ms)
        if self.token is not None:
            method, key, proof = "token", token_id(self.token), auth_proof(self.token.encode("utf-8"), routing_id, ms)
        elif self.authenticates:
            method, key, proof = "curve", str(self.public_key), auth_proof(self.shared_secret(), routing_id, ms)
        else:
            raise KvstashError(E.CONFIG, "no token and no CURVE client key: nothing to authenticate with")
        # ts as a float64 holding an integer, as the Node client encodes it (sidecars without the int64 fix in
        # data-auth.ts refuse a msgpack integer this large)
        return {"op": AUTH_OP, "method": method, "key": key, "ts": float(ms), "proof": proof}

    def __repr__(self) -> str:  # never print secrets
        return f"Credentials(principal={self.principal_hint if self.authenticates else None!r}, curve={self.server_key is not None})"


def options_from_extra(extra: Mapping[str, Any], environ: Optional[Mapping[str, str]] = None) -> Dict[str, Optional[str]]:
    """``KvstashClient`` auth keyword arguments from an engine's extra config, with environment fallbacks."""
    env = os.environ if environ is None else environ
    out: Dict[str, Optional[str]] = {}
    for k, var in _ENV.items():
        v = extra[k] if k in extra else env.get(var)
        out[k] = None if v is None or str(v).strip() == "" else str(v)
    return out


# ---- handshake events --------------------------------------------------------------------------------------

_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_AUTH, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)


class HandshakeMonitor:
    """ZeroMQ socket-monitor events of one client socket: ``handshakes`` counts connections made (a new one may
    be a restarted sidecar that forgot the AUTH binding) and ``error`` describes the last failed handshake
    (cleared by a successful one). Create it before ``connect``; ``poll()`` reads what arrived, never blocks."""

    def __init__(self, sock: zmq.Socket, endpoint: str, creds: Credentials) -> None:
        self.owner, self.endpoint, self.creds = sock, endpoint, creds
        # A unique address: pyzmq's default (by file descriptor) collides with the monitor of a socket closed without
        # disable_monitor (its monitor lingers until libzmq reaps it).
        self.sock = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | _FAILED[0] | _FAILED[1] | _FAILED[2],
                                            addr=f"inproc://kvstash-monitor-{os.urandom(8).hex()}")
        self.handshakes = 0
        self.error: Optional[str] = None

    def pending(self) -> bool:
        return bool(int(self.sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN)  # EVENTS is an int option

    def poll(self) -> None:
        from zmq.utils.monitor import parse_monitor_message

        while True:
            try:
                ev = parse_monitor_message(self.sock.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                return
            kind, value = int(ev["event"]), int(ev["value"])
            if kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.handshakes += 1
                self.error = None
            elif kind in _FAILED:
                self.error = self._message(kind, value)

    def _message(self, kind: int, value: int) -> str:
        ep, c = self.endpoint, self.creds
        if kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            if c.ephemeral:
                return (f"the sidecar at {ep} refused this client's throw-away CURVE key at the handshake (ZAP status "
                        f"{value}): it only admits the keys in its curveClients, so set curve_secret_key to a listed key")
            return (f"the sidecar at {ep} refused this client's CURVE key {c.public_key} at the handshake "
                    f"(ZAP status {value}: the key is not in its curveClients)")
        if kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL and value == getattr(zmq, "PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH", -1):
            return (f"the sidecar at {ep} does not speak CURVE (drop curve_server_key)" if c.server_key else
                    f"the sidecar at {ep} requires CURVE: set curve_server_key (its public key)")
        detail = f"errno {value}" if kind == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL else f"protocol error {value:#x}"
        if c.server_key:
            return (f"the CURVE handshake with {ep} failed ({detail}): wrong curve_server_key (it must be the "
                    f"sidecar's public key), or the sidecar does not speak CURVE")
        return f"the ZeroMQ handshake with {ep} failed ({detail}): if the sidecar uses CURVE, set curve_server_key"

    def close(self) -> None:
        try:
            self.owner.disable_monitor()
        except zmq.ZMQError:
            pass
        self.sock.close(linger=0)
