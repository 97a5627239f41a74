import test from 'ava';
import { rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { driverConformance } from '../connector/storage/conformance.js';
import { SegmentDriver, parseSegmentConfig } from '../connector/storage/segment.js';
import { tempDir } from './helpers/sidecar.js';

const segModule = fileURLToPath(new URL('../connector/storage/segment.ts', import.meta.url));

driverConformance(test, () => {
  const root = tempDir('kvstash-seg-conf-');
  const config = { root, maxValueBytes: 72 * 2 ** 20, segmentBytes: 8 * 2 ** 20 };
  const make = () => new SegmentDriver(parseSegmentConfig(config));
  return {
    driver: make(), reopen: make, cleanup: () => rmSync(root, { recursive: true, force: true }),
    subprocess: { module: segModule, export: 'segmentDriverFactory', config },
  };
}, { prefix: 'storage-segment' });
