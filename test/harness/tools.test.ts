/** The guard every Python-backed suite uses: skip with a note locally, fail in CI. */
function loadTools(ci: string | undefined) {
  const previous = process.env.CI;
  if (ci === undefined) delete process.env.CI;
  else process.env.CI = ci;
  try {
    let tools!: typeof import('../support/tools');
    jest.isolateModules(() => {
      tools = jest.requireActual('../support/tools');
    });
    return tools;
  } finally {
    if (previous === undefined) delete process.env.CI;
    else process.env.CI = previous;
  }
}

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
