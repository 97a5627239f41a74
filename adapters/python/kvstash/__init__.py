"""kvstash — the engine-side Python package of the kvstash KV-cache sidecar.

Modules:
- ``kvstash.client``  — wire protocol v1 client (ZeroMQ DEALER, msgpack header + raw frames)
- ``kvstash.auth``    — data-socket authentication: tokens, CURVE keys, the AUTH proof (stdlib X25519)
- ``kvstash.hashing`` — namespace ids and the canonical block hash v1 (same vectors as the TypeScript code)
- ``kvstash.errors``  — stable error codes (mirror of protocol/errors.ts)
- ``kvstash.vllm``    — ``KvstashConnector``, a vLLM ``KVConnectorBase_V1``
- ``kvstash.sglang``  — SGLang HiCache storage backend

Importing the package imports only msgpack and pyzmq; torch is imported by the engine modules.
"""
from .errors import KvstashError
from .hashing import block_hashes, namespace_id

# Same as package.json's "version" (the one version source; test/version.test.ts checks they agree).
__version__ = "0.1.0"
__all__ = ["KvstashError", "block_hashes", "namespace_id", "__version__"]
