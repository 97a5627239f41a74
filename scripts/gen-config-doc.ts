/** Rewrites the settings table in docs/configuration.md from the SETTINGS of the core and every CLI extension. */
import { readFileSync, writeFileSync } from 'node:fs';
import { settingsMarkdown } from '../connector/config.js';
import { EXTENSIONS } from '../cli/extensions.js';

const file = new URL('../docs/configuration.md', import.meta.url);
const doc = readFileSync(file, 'utf8');
const table = settingsMarkdown(EXTENSIONS.flatMap((e) => e.settings ?? []));
const out = doc.replace(/<!-- settings:begin -->[\s\S]*<!-- settings:end -->/, `<!-- settings:begin -->\n${table}\n<!-- settings:end -->`);
writeFileSync(file, out);
console.log('docs/configuration.md updated');
