#!/usr/bin/env python3
"""An lm:// client written from the protocol description (docs/engine-interfaces.md §5.1), stdlib only.

It behaves on the wire like LMCache's ``LMCServerConnector`` of each header generation:
- one TCP socket, requests strictly sequential, TCP_NODELAY NOT set (LMCache does not set it);
- PUT = ``sendall(header)`` then ``sendall(payload)``, no reply;
- a reply header is read with ONE ``recv(n)`` call, as LMCache does — a short read is an error here
  (``ShortReply``), which checks that the server writes each reply header in a single write;
- GET payloads are read with a ``recv_into`` loop.

Headers (native = little-endian int32, key space-padded to 150 bytes):
  legacy   client "<ii150s"        (command, length, key)                               reply "<ii"
  v1-early client "<iiiiiiii150s"  (command, length, fmt, dtype, s0..s3, key)            reply "<iiiiiiii"
  v1       client "<iiiiiiiii150s" (command, length, fmt, dtype, location, s0..s3, key)  reply "<iiiiiiiii"
           (v1 reply: code, length, fmt, dtype, s0..s3, location — location last)

Command line: ``lmcache_client.py run`` reads a scenario as JSON on stdin::

  {"host": "127.0.0.1", "port": 1234, "generation": "v1", "timeout": 5,
   "ops": [{"op": "put", "key": "k", "data_hex": "00ff", "fmt": 1, "dtype": 3, "shape": [2,1,4,8], "location": 0},
           {"op": "get", "key": "k"}, {"op": "exist", "key": "k"}, {"op": "list"}, {"op": "health"},
           {"op": "raw", "hex": "...", "expect": 36}, {"op": "reconnect"}]}

and prints one JSON object: {"results": [...]} with, per op, its result, the bytes sent and received
(``client_hex``/``server_hex``) and both headers decoded with ``struct``. A connection closed by the server
is reported as {"error": "closed"} for that op and every later op fails the same way (no reconnect, like
LMCache), unless a "reconnect" op follows.
"""
import json
import socket
import struct
import sys

GENERATIONS = {
    # name: (client format, reply format, client fields, reply fields)
    "legacy": ("<ii150s", "<ii", ["command", "length", "key"], ["code", "length"]),
    "v1-early": ("<iiiiiiii150s", "<iiiiiiii",
                 ["command", "length", "fmt", "dtype", "shape0", "shape1", "shape2", "shape3", "key"],
                 ["code", "length", "fmt", "dtype", "shape0", "shape1", "shape2", "shape3"]),
    "v1": ("<iiiiiiiii150s", "<iiiiiiiii",
           ["command", "length", "fmt", "dtype", "location", "shape0", "shape1", "shape2", "shape3", "key"],
           ["code", "length", "fmt", "dtype", "shape0", "shape1", "shape2", "shape3", "location"]),
}
PUT, GET, EXIST, LIST, HEALTH = 1, 2, 3, 4, 5
SUCCESS, FAIL = 200, 400
MAX_KEY_LENGTH = 150


class ShortReply(Exception):
    pass


class Closed(Exception):
    pass


class LmClient:
    def __init__(self, host, port, generation, timeout=5.0):
        self.cfmt, self.rfmt, self.cfields, self.rfields = GENERATIONS[generation]
        self.generation = generation
        self.timeout_s = timeout
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sent = bytearray()
        self.received = bytearray()

    def header(self, command, key="", length=0, fmt=1, dtype=2, shape=(0, 0, 0, 0), location=0):
        kb = key.encode("utf-8")
        assert len(kb) <= MAX_KEY_LENGTH, "key too long"
        field = kb.ljust(MAX_KEY_LENGTH, b" ")
        if self.generation == "legacy":
            return struct.pack(self.cfmt, command, length, field)
        s = list(shape) + [0] * (4 - len(shape))
        if self.generation == "v1-early":
            return struct.pack(self.cfmt, command, length, fmt, dtype, *s, field)
        return struct.pack(self.cfmt, command, length, fmt, dtype, location, *s, field)

    def send(self, data):
        self.sent += data
        try:
            self.sock.sendall(data)
        except OSError as e:
            raise Closed(str(e))

    def recv_header(self):
        n = struct.calcsize(self.rfmt)
        try:
            b = self.sock.recv(n)  # ONE recv, as LMCache's client does
        except ConnectionResetError as e:
            raise Closed(str(e))
        self.received += b
        if len(b) == 0:
            raise Closed("closed by server")
        if len(b) < n:
            raise ShortReply(f"reply header: got {len(b)} of {n} bytes from one recv()")
        return dict(zip(self.rfields, struct.unpack(self.rfmt, b)))

    def recv_exact(self, n):
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            k = self.sock.recv_into(view[got:], n - got)
            if k == 0:
                raise Closed("closed by server during payload")
            got += k
        self.received += buf
        return bytes(buf)

    def put(self, key, data, fmt=1, dtype=2, shape=(0, 0, 0, 0), location=0):
        self.send(self.header(PUT, key, len(data), fmt, dtype, shape, location))
        if data:
            self.send(data)  # second sendall, as LMCache does

    def get(self, key):
        self.send(self.header(GET, key))
        h = self.recv_header()
        if h["code"] != SUCCESS:
            return h, None
        return h, self.recv_exact(h["length"])

    def exist(self, key):
        self.send(self.header(EXIST, key))
        return self.recv_header()

    def health(self):
        self.send(self.header(HEALTH))
        return self.recv_header()

    def list(self):
        self.send(self.header(LIST))
        h = self.recv_header()
        body = self.recv_exact(h["length"]) if h["code"] == SUCCESS else b""
        return h, body.decode("utf-8").split("\n") if body else []

    def raw(self, data, expect):
        """Send raw bytes; read `expect` bytes (0: wait briefly and report what came, or the close)."""
        self.send(data)
        if expect == 0:
            self.sock.settimeout(0.3)
            try:
                b = self.sock.recv(65536)
                self.received += b
                return b, (len(b) == 0)
            except socket.timeout:
                return b"", False
            except ConnectionResetError:
                return b"", True
            finally:
                self.sock.settimeout(self.timeout_s)
        got = self.recv_exact(expect)
        return got, False

    def close(self):
        self.sock.close()


def decode_request(gen, data):
    cfmt, _, cfields, _ = GENERATIONS[gen]
    n = struct.calcsize(cfmt)
    if len(data) < n:
        return None
    d = dict(zip(cfields, struct.unpack(cfmt, data[:n])))
    d["key"] = d["key"].decode("utf-8").strip()
    d["payload_hex"] = data[n:].hex()
    return d


def decode_reply(gen, data, with_payload):
    _, rfmt, _, rfields = GENERATIONS[gen]
    n = struct.calcsize(rfmt)
    if len(data) < n:
        return None
    d = dict(zip(rfields, struct.unpack(rfmt, data[:n])))
    if with_payload:
        d["payload_hex"] = data[n:].hex()
    return d


def run(scenario):
    host, port, gen = scenario["host"], scenario["port"], scenario["generation"]
    timeout = scenario.get("timeout", 5)
    c = LmClient(host, port, gen, timeout)
    results = []
    closed = False
    for op in scenario["ops"]:
        name = op["op"]
        c.sent, c.received = bytearray(), bytearray()
        r = {"op": name}
        if name == "reconnect":
            c.close()
            c = LmClient(host, port, gen, timeout)
            closed = False
            results.append(r)
            continue
        if closed:
            r["error"] = "closed"
            results.append(r)
            continue
        try:
            if name == "put":
                c.put(op["key"], bytes.fromhex(op.get("data_hex", "")), op.get("fmt", 1), op.get("dtype", 2),
                      op.get("shape", [0, 0, 0, 0]), op.get("location", 0))
            elif name == "get":
                h, body = c.get(op["key"])
                r["reply"] = h
                r["data_hex"] = None if body is None else body.hex()
            elif name == "exist":
                r["reply"] = c.exist(op["key"])
                r["exists"] = r["reply"]["code"] == SUCCESS
            elif name == "health":
                r["reply"] = c.health()
                r["ok"] = r["reply"]["code"] == SUCCESS
            elif name == "list":
                h, keys = c.list()
                r["reply"] = h
                r["keys"] = keys
            elif name == "raw":
                got, eof = c.raw(bytes.fromhex(op["hex"]), op.get("expect", 0))
                r["got_hex"] = got.hex()
                if eof:
                    raise Closed("closed by server")
            else:
                raise ValueError(f"unknown op {name}")
        except (Closed, ShortReply, socket.timeout) as e:
            r["error"] = "closed" if isinstance(e, Closed) else ("short" if isinstance(e, ShortReply) else "timeout")
            r["detail"] = str(e)
            closed = True
        r["client_hex"] = bytes(c.sent).hex()
        r["server_hex"] = bytes(c.received).hex()
        if name in ("put", "get", "exist", "health", "list", "raw"):
            r["decoded_request"] = decode_request(gen, bytes(c.sent))
            r["decoded_reply"] = decode_reply(gen, bytes(c.received), name in ("get", "list"))
        results.append(r)
    c.close()
    return {"results": results}


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] != "run":
        sys.stderr.write("usage: lmcache_client.py run < scenario.json\n")
        sys.exit(2)
    print(json.dumps(run(json.load(sys.stdin))))
