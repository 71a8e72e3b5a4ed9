#!/usr/bin/env node
// Runs the Python tests of every container (containers/<name>/tests) with pytest, one process per
// container, from inside that container's folder, so each suite imports its own package the way
// its image does and two containers' modules never collide. Each suite runs on its own environment,
// .venv/<name> (made by python-envs.mjs), where it exists, else on $PYTHON; it first prints the
// versions of the libraries it runs on, so the output says what was proven.
//
// Every suite gets the other environments too, for the tests that cross from one container to the
// other (a LoRA the real kohya-ss writes, loaded by the real server): LORA_TEST_PYTHON_<NAME>,
// LORA_TEST_SD_SCRIPTS (the sd-scripts source) and LORA_TEST_CACHE (costly artifacts kept between runs);
// and LORA_TEST_PYTHON_TOOLS, the tools environment's python, which runs moto's server for the
// inference suite's registry and S3 tests (moto stays out of the server's own environment).
//
// Usage: node test/support/run-pytest.mjs [--root DIR]   (DIR defaults to the repository root)
// In CI (CI=true) a missing pytest fails; elsewhere it is reported and the suites are skipped.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const args = process.argv.slice(2);
const rootFlag = args.indexOf('--root');
if ((rootFlag >= 0 && !args[rootFlag + 1]) || args.length !== (rootFlag >= 0 ? 2 : 0)) {
  console.error('usage: node test/support/run-pytest.mjs [--root DIR]');
  process.exit(2);
}
const root = resolve(rootFlag >= 0 ? args[rootFlag + 1] : join(dirname(fileURLToPath(import.meta.url)), '..', '..'));
const fallbackPython = process.env.PYTHON ?? 'python3';
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

const suitePython = (suite) => {
  const own = join(root, '.venv', relative(containersDir, suite), 'bin', 'python');
  return existsSync(own) ? own : fallbackPython;
};
const missing = [...new Set(suites.map(suitePython))].filter(
  (python) => spawnSync(python, ['-m', 'pytest', '--version'], { encoding: 'utf8' }).status !== 0,
);
if (missing.length > 0) {
  const message = `pytest is not available to ${missing.join(', ')}; npm test makes the environments, or install it with: ${missing[0]} -m pip install pytest`;
  if (inCi) {
    console.error(`${message}. CI never skips the container tests.`);
    process.exit(1);
  }
  console.warn(`Skipping the container tests: ${message}`);
  process.exit(0);
}

const cache = join(root, '.venv', 'cache');
mkdirSync(cache, { recursive: true });
const toolsPython = join(root, '.venv', 'tools', 'bin', 'python');
const crossEnv = {
  LORA_TEST_CACHE: cache,
  LORA_TEST_SD_SCRIPTS: join(root, '.venv', 'training', 'sd-scripts'),
  LORA_TEST_PYTHON_TOOLS: existsSync(toolsPython) ? toolsPython : fallbackPython,
};
for (const suite of suites) {
  crossEnv[`LORA_TEST_PYTHON_${relative(containersDir, suite).toUpperCase().replace(/[^A-Z0-9]/g, '_')}`] = suitePython(suite);
}

// The libraries a suite's proof rests on, as its interpreter imports them; sd-scripts by its pinned tag.
const VERSIONS = `
import importlib, json, os, pathlib
found = {}
for name in ("torch", "diffusers", "transformers", "peft", "accelerate"):
    try:
        found[name] = importlib.import_module(name).__version__
    except Exception:
        pass
pin = pathlib.Path(os.environ["LORA_TEST_SD_SCRIPTS"], ".pinned")
if os.environ["LORA_SUITE"] == "training" and pin.is_file():
    found["sd-scripts"] = pin.read_text().strip()
print(", ".join(f"{k} {v}" for k, v in found.items()) or "no ML libraries")
`;

const failed = [];
for (const suite of suites) {
  const name = relative(root, suite);
  const python = suitePython(suite);
  const env = { ...process.env, ...crossEnv, PYTHONDONTWRITEBYTECODE: '1', LORA_SUITE: relative(containersDir, suite) };
  const versions = spawnSync(python, ['-c', VERSIONS], { encoding: 'utf8', env });
  console.log(`\n== pytest ${name} on ${relative(root, python) || python}: ${(versions.stdout || versions.stderr).trim().split('\n').pop()}`);
  // -p no:cacheprovider: leave no .pytest_cache in the source tree.
  const run = spawnSync(python, ['-m', 'pytest', '-p', 'no:cacheprovider', '-q', 'tests'], { cwd: suite, stdio: 'inherit', env });
  // Exit code 5 means no test was collected: a tests folder without tests is a mistake, not a pass.
  if (run.status !== 0) failed.push(`${name} (pytest exit ${run.status ?? run.signal})`);
}

if (failed.length > 0) {
  console.error(`\nContainer test suites failed: ${failed.join(', ')}`);
  process.exit(1);
}
