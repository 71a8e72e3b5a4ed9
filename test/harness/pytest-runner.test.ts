import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { pythonModulesAvailable } from '../support/tools';

const RUNNER = path.resolve(__dirname, '..', 'support', 'run-pytest.mjs');
const FIXTURES = path.resolve(__dirname, '..', 'fixtures', 'pytest-runner');

function runPytest(root: string, env: Record<string, string | undefined> = {}) {
  const run = spawnSync(process.execPath, [RUNNER, '--root', root], { encoding: 'utf8', env: { ...process.env, ...env } });
  return { status: run.status, output: `${run.stdout}${run.stderr}` };
}

const describeWithPytest = pythonModulesAvailable(['pytest'], 'python3 -m pip install pytest') ? describe : describe.skip;

describeWithPytest('run-pytest.mjs, which npm test uses for containers/*/tests', () => {
  test('runs each container suite in its own folder and process, so their modules never collide', () => {
    const { status, output } = runPytest(path.join(FIXTURES, 'passing'));
    expect(output).toContain('== pytest containers/alpha');
    expect(output).toContain('== pytest containers/beta');
    expect(output).not.toContain('no-tests-folder');
    expect(output.match(/1 passed/g)).toHaveLength(2);
    expect(status).toBe(0);
  });

  test('a failing test fails the run, naming the suite, and the other suites still run', () => {
    const { status, output } = runPytest(path.join(FIXTURES, 'failing'));
    expect(status).toBe(1);
    expect(output).toContain('1 failed');
    expect(output).toContain('== pytest containers/omega');
    expect(output).toContain('1 passed');
    expect(output).toContain('Container test suites failed: containers/gamma (pytest exit 1)');
  });

  test('a tests folder without tests fails the run instead of passing silently', () => {
    const { status, output } = runPytest(path.join(FIXTURES, 'empty'));
    expect(status).toBe(1);
    expect(output).toContain('containers/delta (pytest exit 5)');
  });
});

describe('run-pytest.mjs without pytest, or misused', () => {
  const missing = { PYTHON: '/nonexistent/python3' };

  test('in CI it fails, never skips', () => {
    const { status, output } = runPytest(path.join(FIXTURES, 'passing'), { ...missing, CI: 'true' });
    expect(status).toBe(1);
    expect(output).toMatch(/pytest is not available .* CI never skips the container tests/);
  });

  test('elsewhere it says what to install and skips', () => {
    const { status, output } = runPytest(path.join(FIXTURES, 'passing'), { ...missing, CI: '' });
    expect(status).toBe(0);
    expect(output).toContain('Skipping the container tests: pytest is not available');
  });

  test('a --root without a folder is a usage error', () => {
    const run = spawnSync(process.execPath, [RUNNER, '--root'], { encoding: 'utf8' });
    expect(run.status).toBe(2);
    expect(run.stderr).toContain('usage: node test/support/run-pytest.mjs [--root DIR]');
  });

  test('with no container suites at all it says so and passes', () => {
    const empty = fs.mkdtempSync(path.join(os.tmpdir(), 'no-containers-'));
    try {
      const { status, output } = runPytest(empty, { CI: 'true' });
      expect(status).toBe(0);
      expect(output).toContain('no container test suites');
    } finally {
      fs.rmSync(empty, { recursive: true, force: true });
    }
  });
});
