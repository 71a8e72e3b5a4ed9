import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { COMMANDS, commandHelp, flagsOf, globalHelp } from '../../cli/main';
import { cli } from './fake-io';

const ROOT = path.resolve(__dirname, '..', '..');

describe('the command frame (cli/main.ts)', () => {
  test('every command of the issue is there, each with a summary, a usage and --help', async () => {
    expect(COMMANDS.map((c) => c.name)).toEqual(['validate', 'upload', 'status', 'runs', 'loras', 'generate', 'cleanup']);
    for (const command of COMMANDS) {
      const { code, out, err } = await cli([command.name, '--help']);
      expect([command.name, code, err]).toEqual([command.name, 0, '']);
      expect(out).toBe(commandHelp(command));
      expect(out).toContain(`Usage: lora-pipeline ${command.name}`);
      for (const flag of Object.keys(command.flags)) expect(out).toMatch(new RegExp(`--(\\[no-\\])?${flag}\\b`));
    }
  });

  test('no command redefines a global flag (a stack output flag would then be read wrongly)', () => {
    for (const command of COMMANDS) expect(() => flagsOf(command)).not.toThrow();
    // Negative control: a clash is caught.
    expect(() => flagsOf({ ...COMMANDS[0], flags: { region: { type: 'string', description: 'x' } } })).toThrow('command validate redefines the global flag(s) region');
  });

  test('--help, -h and "help" print the command list; "help <command>" its usage', async () => {
    for (const argv of [['--help'], ['-h'], ['help']]) expect(await cli(argv)).toMatchObject({ code: 0, out: globalHelp(), err: '' });
    expect((await cli(['help', 'upload'])).out).toBe(commandHelp(COMMANDS[1]));
    expect(globalHelp()).toMatch(/Commands:\n {2}validate {2}check a local dataset folder offline/);
    expect(globalHelp()).toContain('--datasets-bucket <value>');
    expect(globalHelp()).toContain('Exit codes: 0 ok; 1 failed');
  });

  test('usage mistakes exit 2 with the reason and where to look: no command, an unknown one, an unknown flag', async () => {
    const none = await cli([]);
    expect([none.code, none.out, none.err]).toEqual([2, '', globalHelp()]);
    const unknown = await cli(['uplaod', 'x']);
    expect([unknown.code, unknown.err]).toEqual([
      2,
      "lora-pipeline: unknown command \"uplaod\": the commands are validate, upload, status, runs, loras, generate, cleanup\nRun 'lora-pipeline --help' for the usage.\n",
    ]);
    const flag = await cli(['upload', 'x', '--forse']);
    expect(flag.code).toBe(2);
    expect(flag.err).toMatch(/^lora-pipeline upload: unknown flag --forse: did you mean --force\? the flags are --name, /);
    const global = await cli(['--nope']);
    expect(global.err).toMatch(/^lora-pipeline: unknown flag --nope: the flags are --help, --region, --profile, --stack, --debug, and one per stack output/);
  });

  test('global flags may come before the command, with their values', async () => {
    const { code, out } = await cli(['--region', 'eu-west-1', '--stack', 'S', 'validate', '--help']);
    expect([code, out]).toEqual([0, commandHelp(COMMANDS[0])]);
  });

  test('an unexpected error: its message, exit 1, and a stack trace only with --debug', async () => {
    const loop = fs.mkdtempSync(path.join(os.tmpdir(), 'lora-main-'));
    fs.symlinkSync(loop, path.join(loop, 'self'));
    try {
      const plain = await cli(['validate', loop]);
      expect(plain.code).toBe(1);
      expect(plain.err).toMatch(/^lora-pipeline validate: Error: .*symbolic link loop/);
      expect(plain.err).not.toMatch(/^\s+at /m);
      const debug = await cli(['validate', loop, '--debug']);
      expect(debug.err).toMatch(/^\s+at /m);
    } finally {
      fs.rmSync(loop, { recursive: true, force: true });
    }
  });
});

describe('npx lora-pipeline (bin/lora-pipeline.cjs), spawned from the repository root', () => {
  /** Offline: no AWS settings, no credentials, npm not allowed to reach a registry. */
  function npx(args: string[], extra: NodeJS.ProcessEnv = {}) {
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(AWS_|LORA_PIPELINE_)/.test(k)));
    const run = spawnSync('npx', ['--offline', 'lora-pipeline', ...args], {
      cwd: ROOT,
      encoding: 'utf8',
      env: { ...env, npm_config_offline: 'true', AWS_CONFIG_FILE: '/nonexistent', AWS_SHARED_CREDENTIALS_FILE: '/nonexistent', AWS_EC2_METADATA_DISABLED: 'true', ...extra },
      timeout: 60_000,
    });
    return { status: run.status, stdout: run.stdout, stderr: run.stderr };
  }

  test('--help prints the command list and exits 0', () => {
    const { status, stdout, stderr } = npx(['--help']);
    expect([status, stderr]).toEqual([0, '']);
    expect(stdout).toBe(globalHelp());
  });

  test('validate runs offline with its exit codes; a usage error exits 2 without a stack trace', () => {
    const refused = npx(['validate', 'test/fixtures/datasets/captions-missing']);
    expect(refused.status).toBe(1);
    expect(refused.stdout).toContain('REFUSED: 1 problem');
    const usage = npx(['validate']);
    expect(usage.status).toBe(2);
    expect(usage.stderr).toContain('validate needs the dataset folder');
    expect(usage.stderr).not.toMatch(/^\s+at /m);
  });

  test('with no AWS region: exit 3 saying how to set one, no stack trace, no SDK version warning', () => {
    const outputs = { LORA_PIPELINE_DATASETS_BUCKET: 'b', LORA_PIPELINE_DATASET_PREFIX: 'datasets/', LORA_PIPELINE_TRIGGER_FILE_NAME: 'dataset.toml' };
    const { status, stderr } = npx(['upload', 'test/fixtures/datasets/clean', '--no-follow'], outputs);
    expect(status).toBe(3);
    expect(stderr).toContain('lora-pipeline upload: no AWS region is set: pass --region <region> or set AWS_REGION');
    expect(stderr).not.toMatch(/^\s+at /m);
    expect(stderr).not.toContain('NodeVersionSupportWarning');
  });
});
