/**
 * kvstash storage-driver SDK — the one entry point for people writing a driver outside the core.
 *
 * EXPERIMENTAL: the contract (StorageDriver and its rules in ./driver.ts) and the conformance kit may change in a
 * minor release until a second, external implementation has proven them; semver does not cover this entry yet.
 *
 * Write a DriverFactory (name, parseConfig, create), check it with `driverConformance(test, factory)` in your tests
 * or `kvstash driver-test ./your-driver.js --config cfg.json`, then hand it to the sidecar's registry:
 * `new Sidecar(config, defaultRegistry().register(yourFactory))`. See docs/storage.md and examples/custom-driver/.
 */
export {
  assertKey, assertValueSize, getManyBySingle, putManyBySingle, DRIVER_ERROR_CODES,
  type BlockMeta, type DriverFactory, type DriverLimits, type DriverStats, type ListedValue, type ReadIntoItem, type ReadIntoResult,
  type StorageDriver, type StoredValue,
} from './driver.js';
export { ErrorCode, KvstashError } from '../../protocol/errors.js';
export { checksum } from '../checksum.js';
export {
  driverConformance, runConformance, runCase, CASE_NAMES, SkipCase,
  type CaseResult, type ConformanceFactory, type ConformanceOptions, type DriverUnderTest, type Metric, type SubprocessSpec, type TestLike,
} from './conformance.js';
export { DriverRegistry, defaultRegistry } from './registry.js';
export { loadDriverFactory } from './load-driver.js';
