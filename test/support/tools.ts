import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import * as path from 'node:path';

/** The tools environment `npm test` makes (test/support/python-envs.mjs). */
const TOOLS_PYTHON = path.resolve(__dirname, '..', '..', '.venv', 'tools', 'bin', 'python');

/** The Python interpreter used for moto and pytest: $PYTHON, else the tools environment, else python3. */
export const PYTHON = process.env.PYTHON ?? (existsSync(TOOLS_PYTHON) ? TOOLS_PYTHON : 'python3');

/** True in CI, where a missing test tool is a failure rather than a reason to skip. */
export const IN_CI = /^(1|true)$/i.test(process.env.CI ?? '');

/**
 * Whether the Python modules a suite needs are importable. Outside CI a missing module skips the
 * suite with a note saying what to install; in CI it throws, so no test is silently skipped.
 */
export function pythonModulesAvailable(modules: readonly string[], installHint: string): boolean {
  const probe = spawnSync(PYTHON, ['-c', modules.map((m) => `import ${m}`).join('; ')], { encoding: 'utf8' });
  if (probe.status === 0) return true;
  const reason = `${PYTHON} cannot import ${modules.join(', ')} (${(probe.stderr || String(probe.error ?? '')).trim().split('\n').pop()}). Install with: ${installHint}`;
  if (IN_CI) throw new Error(`${reason}. CI never skips these tests.`);
  console.warn(`Skipping: ${reason}`);
  return false;
}
