#!/usr/bin/env python3
"""A stand-in for vLLM's ZmqEventPublisher, driven by JSON commands on stdin (one per line, one JSON reply
line each on stdout), for kvstash's KV-events index tests. Written from the interface description in
docs/engine-interfaces.md §2-§3, not from vLLM's code.

Semantics kept from vLLM:
- live stream: 3 frames [topic, seq as 8-byte big-endian, msgpack KVEventBatch]; seq starts at 0, +1 per batch;
- the last `--buffer-steps` (seq, payload) pairs are kept for replay;
- replay: a ROUTER accepting exactly [identity, "", seq8]; it answers [identity, "", seq8, payload] for every
  buffered batch with seq >= start, then [identity, "", ff*8, ""]; checked between commands, with a wait of up
  to 0.1 s on the command queue (like vLLM's publisher thread);
- block hashes: sha256 over cbor2.dumps((parent, tuple(tokens), extra_keys), canonical=True), NONE_HASH from
  the seed string, event ints = last 8 bytes big-endian (or raw digests with hash_form "bytes");
- payloads in any of the three encodings (array-events, map-events, map-envelope) with msgspec's
  omit_defaults rules.
Differences, for testability: the live socket is an XPUB (same frames for subscribers) so `wait_subscribers`
can block until a SUB has subscribed; `skip_live` publishes a batch into the replay buffer only (a
deliberate gap); `restart` resets seq to 0 and empties the buffer (with "rebind": true it also closes and
rebinds both sockets on the same ports, as a restarted process would).

Commands: store, remove, clear, garbage, wait_subscribers, restart, exit (see handle()).
"""
import argparse
import hashlib
import json
import queue
import sys
import threading
import time
from collections import deque

import cbor2
import msgpack
import zmq

STORED = ['block_hashes', 'parent_block_hash', 'token_ids', 'block_size', 'lora_id', 'medium', 'lora_name',
          'extra_keys', 'group_idx', 'kv_cache_spec_kind', 'kv_cache_spec_sliding_window']
REMOVED = ['block_hashes', 'medium', 'group_idx']
SPEC = {'BlockStored': (STORED, 7), 'BlockRemoved': (REMOVED, 2), 'AllBlocksCleared': ([], 0)}
END = b'\xff' * 8


def sha256_cbor(obj):
    return hashlib.sha256(cbor2.dumps(obj, canonical=True)).digest()


def chain(tokens, bs, seed, lora=None, salt=None):
    """Digests of the full blocks of tokens and their extra_keys (lora every block, salt on block 0)."""
    parent = sha256_cbor(seed)
    out = []
    for i in range(len(tokens) // bs):
        keys = ([lora] if lora else []) + ([salt] if salt and i == 0 else [])
        extra = tuple(keys) if keys else None
        d = sha256_cbor((parent, tuple(tokens[i * bs:(i + 1) * bs]), extra))
        out.append((d, extra))
        parent = d
    return out


def event_int(d):
    return int.from_bytes(d, 'big') & (2 ** 64 - 1)


def encode_event(tag, fields, encoding):
    names, required = SPEC[tag]
    if encoding == 'array-events':
        vals = [fields.get(n) for n in names]
        n = len(names)
        while n > required and vals[n - 1] is None:
            n -= 1
        return [tag] + vals[:n]
    out = {'type': tag}
    for i, n in enumerate(names):
        if i < required or fields.get(n) is not None:
            out[n] = fields.get(n)
    return out


def encode_batch(events, rank, encoding):
    ts = time.time()
    if encoding == 'map-envelope':
        obj = {'ts': ts, 'events': events, 'data_parallel_rank': rank}
    else:
        obj = [ts, events, rank]
    return msgpack.packb(obj, use_bin_type=True)


class Publisher:
    def __init__(self, args):
        self.args = args
        self.ctx = zmq.Context()
        self.pub_port = self.replay_port = None
        self.bind()
        self.seq = 0
        self.buffer = deque(maxlen=args.buffer_steps)

    def bind(self):
        for attempt in range(50):
            try:
                self.pub = self.ctx.socket(zmq.XPUB)
                self.pub.setsockopt(zmq.LINGER, 0)
                self.pub.setsockopt(zmq.SNDHWM, 100000)
                self.pub.setsockopt(zmq.XPUB_VERBOSE, 1)
                self.router = self.ctx.socket(zmq.ROUTER)
                self.router.setsockopt(zmq.LINGER, 0)
                if self.pub_port is None:
                    self.pub_port = self.pub.bind_to_random_port('tcp://127.0.0.1')
                    self.replay_port = self.router.bind_to_random_port('tcp://127.0.0.1')
                else:
                    self.pub.bind('tcp://127.0.0.1:%d' % self.pub_port)
                    self.router.bind('tcp://127.0.0.1:%d' % self.replay_port)
                return
            except zmq.ZMQError:
                self.pub.close(0)
                self.router.close(0)
                time.sleep(0.05)
        raise RuntimeError('could not rebind')

    def publish(self, events, cmd):
        payload = cmd.get('payload_override') or encode_batch(events, self.args.dp_rank, cmd.get('encoding', 'map-events'))
        seq = self.seq
        self.seq += 1
        self.buffer.append((seq, payload))
        if not cmd.get('skip_live'):
            self.pub.send_multipart([self.args.topic.encode(), seq.to_bytes(8, 'big'), payload])
        return seq

    def serve_replay(self):
        while self.router.poll(0):
            frames = self.router.recv_multipart()
            if len(frames) != 3 or frames[1] != b'' or len(frames[2]) != 8:
                continue  # vLLM logs and drops anything else, without a reply
            ident, start = frames[0], int.from_bytes(frames[2], 'big')
            for seq, payload in list(self.buffer):
                if seq >= start:
                    self.router.send_multipart([ident, b'', seq.to_bytes(8, 'big'), payload])
            self.router.send_multipart([ident, b'', END, b''])

    def hashes(self, cmd):
        return chain(cmd['tokens'], self.args.block_size, self.args.seed, cmd.get('lora'), cmd.get('salt'))

    def wire_hash(self, d, cmd):
        return d if cmd.get('hash_form') == 'bytes' else event_int(d)

    def handle(self, cmd):
        op = cmd['cmd']
        if op == 'store':
            blocks = self.hashes(cmd)
            first = cmd.get('first_block', 0)
            last = cmd.get('last_block', len(blocks))
            bs = self.args.block_size
            sel = blocks[first:last]
            fields = {
                'block_hashes': [self.wire_hash(d, cmd) for d, _ in sel],
                'parent_block_hash': self.wire_hash(blocks[first - 1][0], cmd) if first > 0 else None,
                'token_ids': cmd['tokens'][first * bs:last * bs],
                'block_size': bs,
                'lora_id': None,
                'medium': cmd.get('medium', 'GPU'),
                'lora_name': cmd.get('lora'),
                'extra_keys': [e for _, e in sel],
                'group_idx': cmd.get('group_idx', 0),
                'kv_cache_spec_kind': 'full_attention',
            }
            seq = self.publish([encode_event('BlockStored', fields, cmd.get('encoding', 'map-events'))], cmd)
            return {'seq': seq, 'hashes': [str(event_int(d)) for d, _ in sel]}
        if op == 'remove':
            blocks = self.hashes(cmd)
            sel = [blocks[i][0] for i in cmd['blocks']]
            fields = {'block_hashes': [self.wire_hash(d, cmd) for d in sel], 'medium': cmd.get('medium', 'GPU'), 'group_idx': cmd.get('group_idx', 0)}
            seq = self.publish([encode_event('BlockRemoved', fields, cmd.get('encoding', 'map-events'))], cmd)
            return {'seq': seq, 'hashes': [str(event_int(d)) for d in sel]}
        if op == 'clear':
            return {'seq': self.publish([encode_event('AllBlocksCleared', {}, cmd.get('encoding', 'map-events'))], cmd)}
        if op == 'garbage':
            return {'seq': self.publish([], dict(cmd, payload_override=b'\xc1\xc1'))}
        if op == 'wait_subscribers':
            deadline = time.time() + cmd.get('timeout', 5)
            seen = 0
            while seen < cmd.get('n', 1) and time.time() < deadline:
                if self.pub.poll(50):
                    msg = self.pub.recv()
                    if msg[:1] == b'\x01':
                        seen += 1
                self.serve_replay()
            return {'subscribed': seen}
        if op == 'restart':
            if cmd.get('rebind'):
                self.pub.close(0)
                self.router.close(0)
                self.bind()
            self.seq = 0
            self.buffer.clear()
            return {'ok': True}
        raise ValueError('unknown command %r' % op)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--topic', default='')
    ap.add_argument('--dp-rank', type=int, default=0)
    ap.add_argument('--buffer-steps', type=int, default=10000)
    ap.add_argument('--seed', default='0')
    ap.add_argument('--block-size', type=int, default=16)
    args = ap.parse_args()
    p = Publisher(args)
    print(json.dumps({'pub': 'tcp://127.0.0.1:%d' % p.pub_port, 'replay': 'tcp://127.0.0.1:%d' % p.replay_port}), flush=True)

    commands = queue.Queue()

    def reader():
        for line in sys.stdin:
            if line.strip():
                commands.put(json.loads(line))
        commands.put({'cmd': 'exit'})

    threading.Thread(target=reader, daemon=True).start()
    while True:
        p.serve_replay()
        try:
            cmd = commands.get(timeout=0.1)
        except queue.Empty:
            continue
        if cmd['cmd'] == 'exit':
            break
        try:
            reply = p.handle(cmd)
        except Exception as e:  # reported to the test, which fails on it
            reply = {'error': repr(e)}
        print(json.dumps(reply), flush=True)
    p.pub.close(0)
    p.router.close(0)
    p.ctx.term()


if __name__ == '__main__':
    main()
