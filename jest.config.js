/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  transform: { '^.+\\.ts$': ['ts-jest', { tsconfig: 'tsconfig.json' }] },
  setupFiles: ['<rootDir>/test/support/jest-setup.ts'],
  // Synthesizing stacks is CPU-bound; these machines have two cores.
  maxWorkers: 2,
  testTimeout: 60_000,
};
