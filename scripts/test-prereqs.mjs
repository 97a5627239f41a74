#!/usr/bin/env node
// Installs (idempotently) the Debian packages the test suite needs, or fails loudly. Never skips silently.
// Python harnesses run on Debian's /usr/bin/python3 (override with KVSTASH_PYTHON).
import { execFileSync, spawnSync } from 'node:child_process';

const PACKAGES = [
  // engine harnesses (vLLM connector, SGLang backend, LMCache client, KV-event publisher)
  'python3-zmq', 'python3-msgpack', 'python3-numpy', 'python3-torch', 'python3-cbor2',
  // NFS suite: userspace NFS server + FUSE client
  'nfs-ganesha', 'nfs-ganesha-vfs', 'rpcbind', 'gvfs-backends', 'gvfs-fuse', 'dbus', 'libglib2.0-bin', 'libnfs-utils', 'iproute2',
  // RESP front: a real Redis (bench baseline), redis-cli / redis-benchmark, redis-py as LMCache's redis:// uses it
  'redis-server', 'redis-tools', 'python3-redis', 'python3-hiredis',
  // adopt-dir janitor: file accesses seen through inotify (inotifywait)
  'inotify-tools',
  // Python gates (scripts/python-lint.mjs): pyflakes checks through flake8, and mypy
  'flake8', 'mypy',
];

function missing() {
  return PACKAGES.filter((p) => spawnSync('dpkg-query', ['-W', '-f=${Status}', p], { encoding: 'utf8' }).stdout?.includes('install ok installed') !== true);
}

let need = missing();
if (need.length > 0) {
  process.stderr.write(`test prerequisites: installing ${need.join(' ')}\n`);
  const apt = ['-o', 'DPkg::Lock::Timeout=300', '-y', '-qq'];
  try {
    execFileSync('apt-get', ['-o', 'DPkg::Lock::Timeout=300', 'update', '-qq'], { stdio: 'inherit' });
    execFileSync('apt-get', [...apt, 'install', '--no-install-recommends', ...need], { stdio: 'inherit', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
  } catch (err) {
    process.stderr.write(`\nFAILED to install test prerequisites (${need.join(' ')}): ${err.message}\nThe tests need them; install them as root and rerun.\n`);
    process.exit(1);
  }
  need = missing();
  if (need.length > 0) {
    process.stderr.write(`FAILED: still missing after install: ${need.join(' ')}\n`);
    process.exit(1);
  }
}
const py = process.env.KVSTASH_PYTHON || '/usr/bin/python3';
const check = spawnSync(py, ['-c', 'import zmq, msgpack, numpy, torch, cbor2, redis'], { encoding: 'utf8' });
if (check.status !== 0) {
  process.stderr.write(`FAILED: ${py} cannot import zmq, msgpack, numpy, torch, cbor2, redis:\n${check.stderr}\n`);
  process.exit(1);
}
process.stderr.write('test prerequisites: ok\n');
