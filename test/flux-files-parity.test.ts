import { execFileSync } from 'node:child_process';
import * as path from 'node:path';
import { FLUX_FILES, FLUX_GATED, FLUX_HUB_REPOS } from '../lambda/shared/flux-files';
import { PYTHON } from './support/tools';

/**
 * The FLUX.1 file names, Hub repositories and pinned commits are written in three places: the
 * workflow's (lambda/shared/flux-files.ts) and each container's flux_files.py. They must agree, or
 * Prepare would accept a folder the job refuses, or the server would load other weights than trained.
 */

const ROOT = path.resolve(__dirname, '..');

/** A container module's constants, read by Python itself (both modules import only the standard library). */
function pythonConstants(container: string, module: string, expression: string): Record<string, unknown> {
  const script = `import json, importlib; m = importlib.import_module(${JSON.stringify(module)}); print(json.dumps(${expression}))`;
  const output = execFileSync(PYTHON, ['-c', script], { cwd: path.join(ROOT, 'containers', container), encoding: 'utf8' });
  return JSON.parse(output) as Record<string, unknown>;
}

const training = pythonConstants(
  'training',
  'lora_trainer.flux_files',
  '{"transformer": m.TRANSFORMER, "ae": m.AE, "clipL": m.CLIP_L, "t5xxl": m.T5XXL, "repos": m.HUB_REPOS, "revisions": m.HUB_REVISIONS}',
);
const serving = pythonConstants(
  'inference',
  'lora_server.flux_files',
  '{"transformer": m.TRANSFORMER_FILES, "ae": m.AE_FILE, "clipL": m.CLIP_L_FILE, "t5xxl": m.T5XXL_FILE, "repos": m.HUB_REPOS, "revisions": m.HUB_REVISIONS, "gated": m.GATED}',
);

test('the workflow and both containers name the same four FLUX.1 files', () => {
  const files = { transformer: FLUX_FILES.transformer, ae: FLUX_FILES.ae, clipL: FLUX_FILES.clipL, t5xxl: FLUX_FILES.t5xxl };
  expect(training).toMatchObject(files);
  expect(serving).toMatchObject(files);
});

test('the workflow and both containers take the same Hub repositories, and the containers pin the same commits', () => {
  expect(training.repos).toEqual(FLUX_HUB_REPOS);
  expect(serving.repos).toEqual(FLUX_HUB_REPOS);
  expect(serving.gated).toEqual(FLUX_GATED);
  expect(serving.revisions).toEqual(training.revisions);
  expect(Object.values(training.revisions as Record<string, string>).every((sha) => /^[0-9a-f]{40}$/.test(sha))).toBe(true);
});
