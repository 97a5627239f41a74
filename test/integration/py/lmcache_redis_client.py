"""Drive kvstash's RESP front the way LMCache's `redis://` remote connector does, with Debian's redis-py.

Mirrors LMCache/LMCache@030c771 lmcache/v1/storage_backend/connector/redis_connector.py (RedisConnector):
redis.asyncio connection pool from the URL; PUT = SET <key>kv_bytes then SET <key>metadata (several puts
gathered at once, as _batched_put does); contains = EXISTS <key>metadata per key, counting the leading hits;
GET = GET <key>metadata, then GET <key>kv_bytes, and DEL <key>metadata when kv_bytes is missing.
RemoteMetadata is LMCache's "iiiiiii" (length, fmt, dtype, shape0..3; lmcache/v1/protocol.py).

usage: lmcache_redis_client.py <redis-url> <mode> [n] [size]   mode: put | check
prints one JSON object.
"""
import asyncio
import hashlib
import json
import struct
import sys

import redis.asyncio as aredis


def key_of(i):
    # LMCache 0.4+ key string: model@world_size@worker_id@<chunk hash hex>@dtype
    return "test/model@1@0@%s@bfloat16" % hashlib.sha256(b"chunk-%d" % i).hexdigest()[:16]


def payload(i, size):
    seed = hashlib.sha256(b"payload-%d" % i).digest()
    return (seed * (size // len(seed) + 1))[:size]


def meta(length):
    return struct.pack("iiiiiii", length, 1, 3, 2, 16, 8, 128)


async def main():
    url, mode = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    size = int(sys.argv[4]) if len(sys.argv) > 4 else 256 * 1024
    pool = aredis.ConnectionPool.from_url(url, max_connections=150)
    conn = aredis.Redis(connection_pool=pool)
    out = {}
    if mode == "put":
        async def put(i):
            await conn.set(key_of(i) + "kv_bytes", payload(i, size))
            await conn.set(key_of(i) + "metadata", meta(size))
        await asyncio.gather(*(put(i) for i in range(n)))
        out["put"] = n
    hits = 0
    for i in range(n + 2):  # two keys past the end: the prefix count must stop at n
        if not await conn.exists(key_of(i) + "metadata"):
            break
        hits += 1
    out["contains"] = hits
    good = 0
    for i in range(n):
        m = await conn.get(key_of(i) + "metadata")
        if m is None:
            continue
        length = struct.unpack("iiiiiii", m)[0]
        kv = await conn.get(key_of(i) + "kv_bytes")
        if kv is not None and length == size and kv == payload(i, size):
            good += 1
    out["good"] = good
    # The connector's consistency path: kv_bytes gone -> it deletes the metadata key.
    victim = key_of(n - 1)
    out["del_kv"] = await conn.delete(victim + "kv_bytes")
    if await conn.get(victim + "metadata") is not None and await conn.get(victim + "kv_bytes") is None:
        out["del_meta"] = await conn.delete(victim + "metadata")
    out["exists_after"] = await conn.exists(victim + "metadata", victim + "kv_bytes")
    out["dbsize"] = await conn.dbsize()
    info = await conn.info()
    out["redis_version"] = info.get("redis_version")
    await conn.close()
    await pool.disconnect()
    print(json.dumps(out))


asyncio.run(main())
