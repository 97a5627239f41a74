/**
 * DriverRegistry — storage drivers by name, owned by one sidecar instance (never a module global).
 * Unknown name → KVS_CONFIG naming the known ones. Built-ins are registered by `defaultRegistry()`.
 */
import { ErrorCode, KvstashError } from '../../protocol/errors.js';
import type { DriverFactory, StorageDriver } from './driver.js';
import { fileDriverFactory } from './file.js';
import { memoryDriverFactory } from './memory.js';
import { segmentDriverFactory } from './segment.js';

export class DriverRegistry {
  private readonly factories = new Map<string, DriverFactory<unknown>>();

  register<C>(factory: DriverFactory<C>): this {
    if (this.factories.has(factory.name)) throw new KvstashError(ErrorCode.CONFIG, `storage driver "${factory.name}" is already registered`);
    this.factories.set(factory.name, factory as DriverFactory<unknown>);
    return this;
  }

  names(): string[] {
    return [...this.factories.keys()];
  }

  get(name: string): DriverFactory<unknown> {
    const f = this.factories.get(name);
    if (!f) throw new KvstashError(ErrorCode.CONFIG, `unknown storage driver "${name}"; registered: ${this.names().join(', ')}`);
    return f;
  }

  /** Parse `raw` with the driver's own parser and build it. */
  create(name: string, raw: Record<string, unknown>): StorageDriver {
    const f = this.get(name);
    return f.create(f.parseConfig(raw));
  }
}

/** Hooks other modules use to add their built-in drivers (nfs, s3) without an import cycle. */
const builtins: DriverFactory<unknown>[] = [memoryDriverFactory as DriverFactory<unknown>, fileDriverFactory as DriverFactory<unknown>,
  segmentDriverFactory as DriverFactory<unknown>];

export function registerBuiltinDriver<C>(f: DriverFactory<C>): void {
  if (!builtins.some((b) => b.name === f.name)) builtins.push(f as DriverFactory<unknown>);
}

export function defaultRegistry(): DriverRegistry {
  const r = new DriverRegistry();
  for (const f of builtins) r.register(f);
  return r;
}
