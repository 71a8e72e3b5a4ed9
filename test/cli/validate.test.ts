import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { cli } from './fake-io';

/**
 * `validate` on the shared dataset fixtures (test/fixtures/datasets/, which also drive Prepare's
 * pre-flight tests and the training container's): the CLI, run offline on a local copy of each,
 * reaches the outcome its case.json states, with the exit code that goes with it.
 */

const FIXTURES = path.resolve(__dirname, '..', 'fixtures', 'datasets');
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'lora-validate-'));
afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }));

interface Case {
  readonly modelType: string;
  readonly hyperparameters: Record<string, unknown>;
  readonly sameFilesAs?: string;
  readonly expected: {
    readonly outcome: 'ok' | 'refused';
    readonly images?: number;
    readonly captions?: number;
    readonly skipped?: string[];
    readonly kind?: string;
    readonly files?: string[];
    readonly mentions?: string[];
  };
}

/** No AWS at all: no credentials, no region, and any endpoint a closed port. */
const OFFLINE = { LORA_PIPELINE_ENDPOINT_URL: 'http://127.0.0.1:9', AWS_EC2_METADATA_DISABLED: 'true', AWS_CONFIG_FILE: '/nonexistent', AWS_SHARED_CREDENTIALS_FILE: '/nonexistent' };

const cases = fs.existsSync(FIXTURES) ? fs.readdirSync(FIXTURES).filter((name) => fs.existsSync(path.join(FIXTURES, name, 'case.json'))).sort() : [];

/** A copy of the fixture's files without case.json, and train.json with the case's hyperparameters. */
function folderOf(name: string, spec: Case): string {
  const folder = path.join(scratch, name);
  fs.cpSync(path.join(FIXTURES, spec.sameFilesAs ?? name), folder, { recursive: true, filter: (source) => path.basename(source) !== 'case.json' });
  if (Object.keys(spec.hyperparameters).length > 0) fs.writeFileSync(path.join(folder, 'train.json'), JSON.stringify({ hyperparameters: spec.hyperparameters }));
  return folder;
}

function tempFolder(files: Record<string, string | Buffer>): string {
  const folder = fs.mkdtempSync(path.join(scratch, 'own-'));
  for (const [file, content] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(folder, file)), { recursive: true });
    fs.writeFileSync(path.join(folder, file), content);
  }
  return folder;
}

const PNG = fs.readFileSync(path.join(FIXTURES, 'clean', 'a.png'));

test('the fixtures are there: both outcomes are covered', () => {
  expect(cases.length).toBeGreaterThan(10);
  const outcomes = cases.map((name) => (JSON.parse(fs.readFileSync(path.join(FIXTURES, name, 'case.json'), 'utf8')) as Case).expected.outcome);
  expect(new Set(outcomes)).toEqual(new Set(['ok', 'refused']));
});

describe.each(cases)('fixture %s', (name) => {
  const spec = JSON.parse(fs.readFileSync(path.join(FIXTURES, name, 'case.json'), 'utf8')) as Case;

  test(`validate gives the case's outcome (${spec.expected.outcome}) and exit code`, async () => {
    const folder = folderOf(name, spec);
    const { code, out } = await cli(['validate', folder, '--json', '--model-type', spec.modelType], OFFLINE);
    const result = JSON.parse(out);
    const { expected } = spec;
    if (expected.outcome === 'ok') {
      expect([code, result.problems]).toEqual([0, []]);
      expect(result.ok).toBe(true);
      if (expected.images !== undefined) expect(result.images).toBe(expected.images);
      if (expected.captions !== undefined) expect(result.captions).toBe(expected.captions);
      if (expected.skipped !== undefined) expect(result.skipped.map((s: string) => s.split(': ')[0]).sort()).toEqual([...expected.skipped].sort());
    } else {
      expect(code).toBe(1);
      expect(result.ok).toBe(false);
      const finding = result.findings.find((f: { kind: string }) => f.kind === expected.kind);
      expect(finding).toBeDefined();
      for (const file of expected.files ?? []) expect(finding.files).toContain(file);
      for (const mention of expected.mentions ?? []) expect(result.problems.join('\n')).toContain(mention);
    }
  });
});

describe('validate on folders of its own', () => {
  test('text output: counts, skipped files with why, and the verdict; exit 0', async () => {
    const folder = tempFolder({ 'a.png': PNG, 'a.txt': 'a photo', 'b.Png': PNG });
    const { code, out, err } = await cli(['validate', folder, '--name', 'pets'], OFFLINE);
    expect([code, err]).toEqual([0, '']);
    expect(out).toContain('Dataset "pets": 3 files');
    expect(out).toContain('images: 1, with a caption: 1');
    expect(out).toMatch(/skipped \(1\): kohya does not train these\n\s+- b\.Png: /);
    expect(out).toContain('served by: the shared endpoint lora-shared-sd15');
    expect(out).toMatch(/OK: Prepare and the training container would accept this folder\.\n\(checked for a deployment with modelType sd15, base model stable-diffusion-v1-5\/stable-diffusion-v1-5, endpoint.mode shared, namePrefix lora, training.captionMissing default: /);
  });

  test('a refused folder lists every problem, train.json and pre-flight alike; exit 1', async () => {
    const folder = tempFolder({ 'a.png': PNG, 'b.png': PNG, 'b.txt': 'x', 'train.json': JSON.stringify({ hyperparameters: { max_train_stepz: 5 } }) });
    const { code, out } = await cli(['validate', folder], OFFLINE);
    expect(code).toBe(1);
    expect(out).toMatch(/REFUSED: 2 problems; a run of this folder would fail before training:/);
    expect(out).toContain('"max_train_stepz": is not a known hyperparameter');
    expect(out).toContain('a.png');
  });

  test('train.json as Prepare reads it: bad JSON and misplaced fields are refused, a good one is used', async () => {
    const broken = tempFolder({ 'a.png': PNG, 'a.txt': 'x', 'train.json': '{"name": "x",}' });
    const bad = await cli(['validate', broken], OFFLINE);
    expect(bad.code).toBe(1);
    expect(bad.out).toMatch(/- train\.json: it is not valid JSON \(.* at line 1 column \d+\)/);
    const misplaced = tempFolder({ 'a.png': PNG, 'a.txt': 'x', 'train.json': '{"dataset": "x"}' });
    expect((await cli(['validate', misplaced], OFFLINE)).out).toContain('train.json: "dataset" belongs in the execution input only');
    const good = tempFolder({ 'a.png': PNG, 'a.txt': 'x', 'train.json': '{"modelType": "sdxl", "hyperparameters": {"max_train_steps": 10}}' });
    const ok = await cli(['validate', good], OFFLINE);
    expect(ok.code).toBe(0);
    expect(ok.out).toContain('model: sdxl (train.json)');
    expect(ok.out).toContain('served by: an endpoint of its own');
  });

  test("a dataset.toml over Prepare's 1 MiB limit is refused (negative control: the same config at the limit passes)", async () => {
    const config = "[[datasets]]\n[[datasets.subsets]]\nimage_dir = '.'\n";
    const padded = (size: number) => `${config}#${'x'.repeat(size - config.length - 2)}\n`;
    const atLimit = await cli(['validate', tempFolder({ 'a.png': PNG, 'a.txt': 'x', 'dataset.toml': padded(1024 * 1024) })], OFFLINE);
    expect([atLimit.code, atLimit.out]).toEqual([0, expect.stringContaining('OK:')]);
    const over = await cli(['validate', tempFolder({ 'a.png': PNG, 'a.txt': 'x', 'dataset.toml': padded(1024 * 1024 + 1) })], OFFLINE);
    expect(over.code).toBe(1);
    expect(over.out).toContain('dataset.toml: it is 1048577 bytes, more than the 1048576 a dataset configuration may have');
  });

  test('deployment-dependent checks follow --endpoint-mode: endpoint.name is refused in shared mode, allowed in dedicated', async () => {
    const folder = tempFolder({ 'a.png': PNG, 'a.txt': 'x', 'train.json': '{"endpoint": {"name": "lora-pets"}}' });
    const shared = await cli(['validate', folder], OFFLINE);
    expect(shared.code).toBe(1);
    expect(shared.out).toContain('"endpoint.name" = "lora-pets" applies only to a dedicated endpoint');
    const dedicated = await cli(['validate', folder, '--endpoint-mode', 'dedicated'], OFFLINE);
    expect([dedicated.code, dedicated.out]).toEqual([0, expect.stringContaining('OK:')]);
    const fromEnv = await cli(['validate', folder], { ...OFFLINE, LORA_PIPELINE_ENDPOINT_MODE: 'dedicated' });
    expect(fromEnv.code).toBe(0);
    // The name prefix decides which endpoint names the workflow may create.
    const other = await cli(['validate', folder, '--endpoint-mode', 'dedicated', '--name-prefix', 'other'], OFFLINE);
    expect(other.code).toBe(1);
    expect(other.out).toContain('must start with "other-"');
  });

  test("the deployment's training limits are the model type's defaults: a spot wait shorter than them is refused", async () => {
    const waiting = (seconds: number, modelType = 'sd15') =>
      tempFolder({ 'a.png': PNG, 'a.txt': 'x', 'train.json': JSON.stringify({ modelType, training: { maxWaitSeconds: seconds } }) });
    const short = await cli(['validate', waiting(1800)], OFFLINE);
    expect(short.code).toBe(1);
    expect(short.out).toContain('"training.maxWaitSeconds" = 1800 (train.json) is less than "training.maxRuntimeSeconds" = 3600 (deploy-time configuration)');
    expect((await cli(['validate', waiting(3600)], OFFLINE)).code).toBe(0);
    // FLUX.1 trains for up to 6 h by default.
    expect((await cli(['validate', waiting(7200, 'flux1'), '--model-type', 'flux1'], OFFLINE)).out).toContain('"training.maxRuntimeSeconds" = 21600');
  });

  test("a captionless folder follows the deployment's training.captionMissing (stack output CaptionMissing), as Prepare does", async () => {
    const folder = tempFolder({ 'a.png': PNG, 'b.png': PNG, 'b.txt': 'x' });
    const on = await cli(['validate', folder, '--caption-missing', 'true', '--json'], OFFLINE);
    expect(on.code).toBe(0);
    expect(JSON.parse(on.out)).toMatchObject({ ok: true, captionsToWrite: 1 });
    const fromEnv = await cli(['validate', folder], { ...OFFLINE, LORA_PIPELINE_CAPTION_MISSING: 'true' });
    expect(fromEnv.code).toBe(0);
    // The controls: off, and the SD default, refuse it; a run's own caption_missing still wins.
    for (const setting of ['false', 'default']) {
      const off = await cli(['validate', folder, '--caption-missing', setting], OFFLINE);
      expect([off.code, off.out]).toEqual([1, expect.stringContaining('1 of 2 image(s) have no caption: a.png')]);
    }
    fs.writeFileSync(path.join(folder, 'train.json'), JSON.stringify({ hyperparameters: { caption_missing: false } }));
    expect((await cli(['validate', folder, '--caption-missing', 'true'], OFFLINE)).code).toBe(1);
    const bad = await cli(['validate', folder, '--caption-missing', 'yes'], OFFLINE);
    expect([bad.code, bad.err]).toEqual([2, expect.stringContaining(`--caption-missing "yes" is not allowed: expected 'true', 'false' or 'default'`)]);
  });

  test('usage mistakes exit 2 with the reason: no folder, two folders, a bad --model-type or --name', async () => {
    const folder = tempFolder({ 'a.png': PNG, 'a.txt': 'x' });
    const none = await cli(['validate'], OFFLINE);
    expect([none.code, none.err]).toEqual([2, "lora-pipeline validate: validate needs the dataset folder: lora-pipeline validate <folder>\nRun 'lora-pipeline validate --help' for the usage.\n"]);
    expect((await cli(['validate', folder, folder], OFFLINE)).code).toBe(2);
    const type = await cli(['validate', folder, '--model-type', 'sd3'], OFFLINE);
    expect([type.code, type.err]).toEqual([2, expect.stringContaining(`--model-type "sd3" is not allowed: expected 'sd15', 'sdxl' or 'flux1'`)]);
    const name = await cli(['validate', folder, '--name', 'a/b'], OFFLINE);
    expect([name.code, name.err]).toEqual([2, expect.stringContaining('--name = "a/b" is neither a folder name')]);
  });

  test('a folder that does not exist, or a file, exits 1 saying so', async () => {
    const missing = await cli(['validate', path.join(scratch, 'nope')], OFFLINE);
    expect([missing.code, missing.err]).toEqual([1, `${path.join(scratch, 'nope')} does not exist\n`]);
    const file = path.join(tempFolder({ 'x.png': PNG }), 'x.png');
    expect((await cli(['validate', file], OFFLINE)).err).toContain('is not a folder');
  });

  test('symbolic links: a linked file is read, a link loop is a clear error', async () => {
    const target = tempFolder({ 'a.png': PNG, 'a.txt': 'x' });
    const linked = tempFolder({});
    fs.symlinkSync(path.join(target, 'a.png'), path.join(linked, 'a.png'));
    fs.symlinkSync(path.join(target, 'a.txt'), path.join(linked, 'a.txt'));
    expect((await cli(['validate', linked, '--json'], OFFLINE)).out).toContain('"images": 1');
    fs.symlinkSync(linked, path.join(linked, 'loop'));
    const loop = await cli(['validate', linked], OFFLINE);
    expect(loop.code).toBe(1);
    expect(loop.err).toMatch(/links back to a folder it is in \(a symbolic link loop\)/);
    expect(loop.err).not.toMatch(/^\s+at /m);
  });
});
