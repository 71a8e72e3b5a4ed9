#!/usr/bin/env node
// Makes the Python environments `npm test` needs, in .venv/ of the project, from pinned files:
//   .venv/tools      pytest, moto's server and ruff (test/requirements.txt)
//   .venv/<name>     one per container with tests: containers/<name>/requirements-test.txt
//   .venv/training/sd-scripts   kohya-ss sd-scripts at the commit the training image pins
// An environment is made again only when what it is made from changes, so a second run takes a
// second. Needs only a python3 with its venv module.
//
// Usage: node test/support/python-envs.mjs [--print]   (--print: the interpreters, as JSON)
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const VENVS = join(ROOT, '.venv');
// Wheels and the sd-scripts source for machines whose package index lacks them; only ever read.
const VENDOR = resolve(ROOT, '..', 'shared', 'vendor');
// Where torch's CPU builds are published; a normal machine's default index serves only CUDA builds.
const TORCH_CPU_INDEX = 'https://download.pytorch.org/whl/cpu';
const SD_SCRIPTS_REPOSITORY = 'https://github.com/kohya-ss/sd-scripts.git';
// Bumped when this script changes how an environment is made, so every environment is made again.
const RECIPE = 3;

/** The interpreter of environment `name`. */
export function venvPython(name, root = ROOT) {
  return join(root, '.venv', name, 'bin', 'python');
}

/** Where the sd-scripts source of the training tests lives. */
export const SD_SCRIPTS_DIR = join(VENVS, 'training', 'sd-scripts');

/** The environments: tools first, then one per container that has a requirements-test.txt. */
export function environments() {
  const containers = readdirSync(join(ROOT, 'containers'), { withFileTypes: true })
    .filter((entry) => entry.isDirectory() && existsSync(join(ROOT, 'containers', entry.name, 'requirements-test.txt')))
    .map((entry) => entry.name)
    .sort();
  return [
    // The machine's own packages stay visible here: moto is not on every package index this project
    // is tested from, and a machine that has it installed can use it.
    { name: 'tools', requirements: join(ROOT, 'test', 'requirements.txt'), systemSitePackages: true },
    ...containers.map((name) => ({
      name,
      requirements: join(ROOT, 'containers', name, 'requirements-test.txt'),
      systemSitePackages: false,
      sdScripts: name === 'training',
    })),
  ];
}

function run(command, args, options = {}) {
  const result = spawnSync(command, args, { stdio: 'inherit', ...options });
  if (result.status !== 0) {
    const how = result.error ? result.error.message : `exit ${result.status ?? result.signal}`;
    throw new Error(`${command} ${args.join(' ')} failed (${how})`);
  }
  return result;
}

function output(command, args) {
  const result = spawnSync(command, args, { encoding: 'utf8' });
  return result.status === 0 ? result.stdout.trim() : '';
}

/** Each requirements file with every file it includes by -r, so an edit to any of them counts. */
export function requirementsText(file) {
  const text = readFileSync(file, 'utf8');
  const included = [...text.matchAll(/^-r\s+(\S+)/gm)].map((m) => requirementsText(resolve(dirname(file), m[1])));
  return [text, ...included].join('\n');
}

/** The commit and tag the training image pins sd-scripts at, read from its Dockerfile. */
export function sdScriptsPin() {
  const dockerfile = readFileSync(join(ROOT, 'containers', 'training', 'Dockerfile'), 'utf8');
  const commit = /^ARG SD_SCRIPTS_COMMIT=([0-9a-f]{40})$/m.exec(dockerfile)?.[1];
  const tag = /^ARG SD_SCRIPTS_VERSION=(\S+)$/m.exec(dockerfile)?.[1];
  if (!commit || !tag) throw new Error('containers/training/Dockerfile has no ARG SD_SCRIPTS_COMMIT=<40 hex> and SD_SCRIPTS_VERSION');
  return { commit, tag };
}

/** pip's arguments and environment: the vendor folder as --find-links where it exists, PyTorch's CPU index elsewhere. */
function pipSettings(basePython) {
  const env = { ...process.env, PIP_DISABLE_PIP_VERSION_CHECK: '1' };
  if (!existsSync(VENDOR)) return { args: ['--extra-index-url', TORCH_CPU_INDEX], env };
  // A machine with the vendor folder is offline: its default index cannot be reached, and asking it
  // first costs a round of retries per package, so the configured extra indexes become the only ones.
  const configured = output(basePython, ['-m', 'pip', 'config', 'get', 'global.extra-index-url']).split(/\s+/).filter(Boolean);
  if (configured.length > 0) {
    env.PIP_INDEX_URL = configured[0];
    env.PIP_EXTRA_INDEX_URL = configured.slice(1).join(' ');
  }
  return { args: ['--find-links', VENDOR], env };
}

export function fingerprint(spec, python) {
  const parts = [RECIPE, output(python, ['--version']), requirementsText(spec.requirements), existsSync(VENDOR)];
  if (spec.sdScripts) parts.push(JSON.stringify(sdScriptsPin()));
  return createHash('sha256').update(parts.join('\0')).digest('hex');
}

/** Makes environment `spec` unless its stamp says it is made from the same files; returns its interpreter. */
export function ensureEnvironment(spec, basePython = process.env.PYTHON_FOR_VENVS ?? 'python3') {
  const dir = join(VENVS, spec.name);
  const stamp = join(dir, '.made-from');
  const wanted = fingerprint(spec, basePython);
  if (existsSync(stamp) && readFileSync(stamp, 'utf8') === wanted && existsSync(venvPython(spec.name))) return venvPython(spec.name);

  console.log(`== making .venv/${spec.name} from ${relative(ROOT, spec.requirements)}`);
  rmSync(dir, { recursive: true, force: true });
  const venvArgs = ['-m', 'venv', ...(spec.systemSitePackages ? ['--system-site-packages'] : []), dir];
  if (spawnSync(basePython, venvArgs, { stdio: 'inherit' }).status !== 0) {
    throw new Error(`${basePython} -m venv failed: the tests need Python 3 with its venv module (on Debian or Ubuntu: apt-get install python3-venv)`);
  }
  const python = venvPython(spec.name);
  const pip = pipSettings(basePython);
  run(python, ['-m', 'pip', 'install', '-qq', ...pip.args, '-r', spec.requirements], { env: pip.env });
  if (spec.sdScripts) installSdScripts(python, pip);
  writeFileSync(stamp, wanted);
  return python;
}

/** sd-scripts' source at the image's commit, installed as the image does (`pip install -e .`, its `library` package). */
function installSdScripts(python, pip) {
  const { commit, tag } = sdScriptsPin();
  rmSync(SD_SCRIPTS_DIR, { recursive: true, force: true });
  mkdirSync(SD_SCRIPTS_DIR, { recursive: true });
  const archive = join(VENDOR, `sd-scripts-${tag}-${commit.slice(0, 8)}.tar.gz`);
  if (existsSync(archive)) {
    run('tar', ['-xzf', archive, '-C', SD_SCRIPTS_DIR, '--strip-components=1']);
  } else {
    run('git', ['-C', SD_SCRIPTS_DIR, 'init', '-q']);
    run('git', ['-C', SD_SCRIPTS_DIR, 'fetch', '-q', '--depth', '1', SD_SCRIPTS_REPOSITORY, commit]);
    run('git', ['-C', SD_SCRIPTS_DIR, 'checkout', '-q', 'FETCH_HEAD']);
  }
  run(python, ['-m', 'pip', 'install', '-qq', '--no-deps', '-e', SD_SCRIPTS_DIR], { env: pip.env });
  // What the test output names as the sd-scripts the training tests ran on.
  writeFileSync(join(SD_SCRIPTS_DIR, '.pinned'), `${tag} (${commit})\n`);
  shimTorchvisionOps(python);
}

/**
 * sd-scripts imports only torchvision.transforms, which is pure Python. Where the installed
 * torchvision's compiled ops do not load with this torch (a CUDA build beside CPU torch), its import
 * fails registering fake kernels for those ops; a .pth file skips just that registration.
 */
function shimTorchvisionOps(python) {
  if (spawnSync(python, ['-c', 'import torchvision']).status === 0) return;
  const site = output(python, ['-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])']);
  writeFileSync(
    join(site, 'lora_test_torchvision_ops.pth'),
    "import sys, types; sys.modules.setdefault('torchvision._meta_registrations', types.ModuleType('torchvision._meta_registrations'))\n",
  );
  run(python, ['-c', 'from torchvision import transforms']);
  console.log('== torchvision: compiled ops unavailable with this torch; their fake-kernel registration is skipped');
}

/** Every environment, made where needed; returns name → interpreter. */
export function ensureEnvironments() {
  mkdirSync(VENVS, { recursive: true });
  return Object.fromEntries(environments().map((spec) => [spec.name, ensureEnvironment(spec)]));
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    const pythons = ensureEnvironments();
    if (process.argv.includes('--print')) console.log(JSON.stringify(pythons));
  } catch (error) {
    console.error(`Setting up the Python test environments failed: ${error.message}`);
    process.exit(1);
  }
}
