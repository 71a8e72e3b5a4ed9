import * as fs from 'node:fs';
import * as path from 'node:path';
import { CONFIG_FIELDS } from '../lib/config';

const ROOT = path.resolve(__dirname, '..');
const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');

describe('README', () => {
  test('the quick start is the two commands', () => {
    const quickStart = readme.split('## Quick start')[1].split('\n## ')[0];
    const commands = [...quickStart.matchAll(/^(npm[^#\n]*?)\s*(#.*)?$/gm)].map((m) => m[1]);
    expect(commands).toEqual(['npm ci && npx cdk synth', 'npm test']);
  });

  test('.ci/run runs exactly the README test command', () => {
    const ci = fs.readFileSync(path.join(ROOT, '.ci', 'run'), 'utf8');
    expect(ci).toMatch(/^npm test$/m);
  });

  test('the configuration table has one row per key, with its default', () => {
    const rows = new Map(
      [...readme.matchAll(/^\| `([\w.]+)` \| ([^|]+) \|/gm)].filter(([, key]) => key in CONFIG_FIELDS).map(([, key, cell]) => [key, cell.trim()]),
    );
    expect([...rows.keys()].sort()).toEqual(Object.keys(CONFIG_FIELDS).sort());
    for (const [key, spec] of Object.entries(CONFIG_FIELDS)) {
      if (spec.default !== undefined) expect([key, rows.get(key)]).toEqual([key, `\`${String(spec.default)}\``]);
    }
  });
});
