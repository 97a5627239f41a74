/**
 * Child process of the conformance kit's crash case: builds a driver from a SubprocessSpec (argv[2], JSON, plus
 * `key` and `size`), puts the kit's pattern value under `key`, and says "putting" on stdout just before the put so
 * the parent can kill it mid-write. Not a public entry point.
 */
import { pathToFileURL } from 'node:url';
import { checksum } from '../checksum.js';
import { pattern, type SubprocessSpec } from './conformance-cases.js';
import { loadDriverFactory } from './load-driver.js';

const spec = JSON.parse(process.argv[2] ?? '{}') as SubprocessSpec & { key: string; size: number };
const factory = await loadDriverFactory(spec.module.startsWith('file:') ? spec.module : pathToFileURL(spec.module).href, spec.export);
const driver = factory.create(factory.parseConfig(spec.config));
await driver.open();
const value = pattern(spec.size, spec.key);
const meta = { checksum: checksum(value) };
process.stdout.write('putting\n');
await driver.put(spec.key, value, meta);
process.stdout.write('done\n');
await driver.close();
