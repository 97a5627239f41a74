/**
 * The one version source: package.json's `version`, found from this file in the source tree and in dist/
 * (an installed package too). Everything that prints or sends a version (CLI `--version`, HELLO's `server`,
 * `kvstash.__version__` in the Python package, checked by test/version.test.ts) derives from it.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

function readVersion(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const p = path.join(dir, 'package.json');
    if (existsSync(p)) {
      const pkg = JSON.parse(readFileSync(p, 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'kvstash' && typeof pkg.version === 'string') return pkg.version;
    }
    const up = path.dirname(dir);
    if (up === dir) throw new Error('kvstash package.json not found above ' + fileURLToPath(import.meta.url));
    dir = up;
  }
}

/** The package version, e.g. "0.1.0". */
export const VERSION: string = readVersion();
