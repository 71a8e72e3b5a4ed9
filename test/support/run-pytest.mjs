#!/usr/bin/env node
// Runs the Python tests of every container (containers/<name>/tests) with pytest, one process per
// container, from inside that container's folder, so each suite imports its own package the way
// its image does and two containers' modules never collide.
//
// Usage: node test/support/run-pytest.mjs [--root DIR]   (DIR defaults to the repository root)
// In CI (CI=true) a missing pytest fails; elsewhere it is reported and the suites are skipped.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const args = process.argv.slice(2);
const rootFlag = args.indexOf('--root');
if ((rootFlag >= 0 && !args[rootFlag + 1]) || args.length !== (rootFlag >= 0 ? 2 : 0)) {
  console.error('usage: node test/support/run-pytest.mjs [--root DIR]');
  process.exit(2);
}
const root = resolve(rootFlag >= 0 ? args[rootFlag + 1] : join(dirname(fileURLToPath(import.meta.url)), '..', '..'));
const python = process.env.PYTHON ?? 'python3';
const inCi = /^(1|true)$/i.test(process.env.CI ?? '');

const containersDir = join(root, 'containers');
const suites = existsSync(containersDir)
  ? readdirSync(containersDir, { withFileTypes: true })
      .filter((entry) => entry.isDirectory() && existsSync(join(containersDir, entry.name, 'tests')))
      .map((entry) => join(containersDir, entry.name))
      .sort()
  : [];

if (suites.length === 0) {
  console.log(`pytest: no container test suites under ${relative(process.cwd(), containersDir) || containersDir}/*/tests`);
  process.exit(0);
}

const probe = spawnSync(python, ['-m', 'pytest', '--version'], { encoding: 'utf8' });
if (probe.status !== 0) {
  const message = `pytest is not available to ${python}; install it with: ${python} -m pip install pytest`;
  if (inCi) {
    console.error(`${message}. CI never skips the container tests.`);
    process.exit(1);
  }
  console.warn(`Skipping the container tests: ${message}`);
  process.exit(0);
}

const failed = [];
for (const suite of suites) {
  const name = relative(root, suite);
  console.log(`\n== pytest ${name}`);
  // -p no:cacheprovider: leave no .pytest_cache in the source tree.
  const run = spawnSync(python, ['-m', 'pytest', '-p', 'no:cacheprovider', '-q', 'tests'], {
    cwd: suite,
    stdio: 'inherit',
    env: { ...process.env, PYTHONDONTWRITEBYTECODE: '1' },
  });
  // Exit code 5 means no test was collected: a tests folder without tests is a mistake, not a pass.
  if (run.status !== 0) failed.push(`${name} (pytest exit ${run.status ?? run.signal})`);
}

if (failed.length > 0) {
  console.error(`\nContainer test suites failed: ${failed.join(', ')}`);
  process.exit(1);
}
