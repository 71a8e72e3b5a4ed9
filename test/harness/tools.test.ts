import * as path from 'node:path';
import { requireWithEnv } from '../support/isolated';

/** The guard every Python-backed suite uses: skip with a note locally, fail in CI. */
const loadTools = (ci: string | undefined) =>
  requireWithEnv<typeof import('../support/tools')>(path.resolve(__dirname, '../support/tools'), { CI: ci });

describe('pythonModulesAvailable', () => {
  test('is true for modules the interpreter has', () => {
    expect(loadTools('true').pythonModulesAvailable(['json', 'os'], 'nothing to install')).toBe(true);
  });

  test('in CI a missing module is an error that says what to install, never a skip', () => {
    expect(() => loadTools('true').pythonModulesAvailable(['no_such_module_for_this_test'], 'pip install it')).toThrow(
      /cannot import no_such_module_for_this_test .*Install with: pip install it\. CI never skips these tests\./,
    );
  });

  test('outside CI a missing module skips the suite with a warning', () => {
    const warn = jest.spyOn(console, 'warn').mockImplementation(() => undefined);
    try {
      expect(loadTools(undefined).pythonModulesAvailable(['no_such_module_for_this_test'], 'pip install it')).toBe(false);
      expect(warn).toHaveBeenCalledWith(expect.stringMatching(/^Skipping: .*no_such_module_for_this_test/));
    } finally {
      warn.mockRestore();
    }
  });
});
