/**
 * Load a vendor's driver module: its default export (or `factory`, or the named export) must be a DriverFactory
 * ({ name, parseConfig, create }). Used by `kvstash driver-test` and the conformance kit's child process.
 */
import { ErrorCode, KvstashError } from '../../protocol/errors.js';
import type { DriverFactory } from './driver.js';

function isFactory(x: unknown): x is DriverFactory<unknown> {
  const f = x as DriverFactory<unknown> | undefined;
  return !!f && typeof f.name === 'string' && typeof f.parseConfig === 'function' && typeof f.create === 'function';
}

/** `specifier` is a file URL or anything `import()` accepts. */
export async function loadDriverFactory(specifier: string, exportName?: string): Promise<DriverFactory<unknown>> {
  let mod: Record<string, unknown>;
  try {
    mod = (await import(specifier)) as Record<string, unknown>;
  } catch (err) {
    throw new KvstashError(ErrorCode.CONFIG, `cannot load driver module ${specifier}: ${(err as Error).message}`, { cause: err });
  }
  const names = exportName ? [exportName] : ['default', 'factory'];
  for (const n of names) if (isFactory(mod[n])) return mod[n];
  throw new KvstashError(ErrorCode.CONFIG, `${specifier}: export ${names.map((n) => `"${n}"`).join(' or ')} is not a DriverFactory ({ name, parseConfig, create })`);
}
