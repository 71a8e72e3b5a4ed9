/**
 * Loads a fresh copy of a module (and what it imports) with environment variables set for the
 * duration of the load, for modules that read the environment once, at load time. The variables
 * are restored afterwards; `undefined` unsets one.
 */
export function requireWithEnv<T extends object>(modulePath: string, env: Record<string, string | undefined>): T {
  const previous = Object.fromEntries(Object.keys(env).map((key) => [key, process.env[key]]));
  const apply = (values: Record<string, string | undefined>) => {
    for (const [key, value] of Object.entries(values)) {
      if (value === undefined) delete process.env[key];
      else process.env[key] = value;
    }
  };
  apply(env);
  try {
    let loaded!: T;
    jest.isolateModules(() => {
      loaded = jest.requireActual<T>(modulePath);
    });
    return loaded;
  } finally {
    apply(previous);
  }
}
