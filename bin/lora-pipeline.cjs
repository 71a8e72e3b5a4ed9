#!/usr/bin/env node
'use strict';
// `npx lora-pipeline`: runs cli/main.ts through this repository's tsx, so the CLI needs no build step.
const path = require('node:path');

const root = path.resolve(__dirname, '..');
// The SDK warns on every run under Node.js 20 about SDK releases after January 2027; this repository
// pins its SDK versions, so the warning says nothing about this CLI. The SDK's own switch turns it off.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
const debug = process.argv.includes('--debug');

try {
  const tsx = require(require.resolve('tsx/cjs/api', { paths: [root] }));
  const cli = tsx.require(path.join(root, 'cli', 'main.ts'), module.filename);
  cli.runCli().catch(fail);
} catch (error) {
  fail(error);
}

/** Only what went wrong, unless --debug asks for the stack trace too. */
function fail(error) {
  const message = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
  console.error(`lora-pipeline: ${message}`);
  if (debug && error instanceof Error && error.stack) console.error(error.stack);
  if (!debug) console.error('(run again with --debug for the stack trace)');
  process.exitCode = 1;
}
