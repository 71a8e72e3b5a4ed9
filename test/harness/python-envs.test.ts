import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { IN_CI } from '../support/tools';

const ROOT = path.resolve(__dirname, '..', '..');
const MODULE = path.join(ROOT, 'test', 'support', 'python-envs.mjs');

/** Calls an export of python-envs.mjs (an ES module) in a child Node.js and returns its JSON result. */
function call(expression: string): unknown {
  const script = `import(${JSON.stringify(MODULE)}).then((m) => console.log(JSON.stringify(${expression})))`;
  const run = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
  expect(run.stderr).toBe('');
  return JSON.parse(run.stdout);
}

describe('python-envs.mjs, which npm test uses to make the Python environments', () => {
  test('one environment for the tools, then one per container with a requirements-test.txt', () => {
    const specs = call('m.environments()') as { name: string; requirements: string; systemSitePackages: boolean; sdScripts?: boolean }[];
    expect(specs.map((s) => [s.name, path.relative(path.resolve(__dirname, '..', '..'), s.requirements), s.systemSitePackages])).toEqual([
      ['tools', 'test/requirements.txt', true],
      ['inference', 'containers/inference/requirements-test.txt', false],
      ['training', 'containers/training/requirements-test.txt', false],
    ]);
    expect(specs.filter((s) => s.sdScripts).map((s) => s.name)).toEqual(['training']);
  });

  test('sd-scripts is pinned where the training image pins it', () => {
    const dockerfile = fs.readFileSync(path.resolve(__dirname, '..', '..', 'containers', 'training', 'Dockerfile'), 'utf8');
    const pin = call('m.sdScriptsPin()') as { commit: string; tag: string };
    expect(pin.commit).toMatch(/^[0-9a-f]{40}$/);
    expect(dockerfile).toContain(`ARG SD_SCRIPTS_COMMIT=${pin.commit}\n`);
    expect(dockerfile).toContain(`ARG SD_SCRIPTS_VERSION=${pin.tag}\n`);
  });

  test('an edit to a file included with -r changes what an environment is made from, so it is made again', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'envs-'));
    fs.writeFileSync(path.join(dir, 'requirements.txt'), 'a==1\n');
    fs.writeFileSync(path.join(dir, 'requirements-test.txt'), '-r requirements.txt\npytest==9\n');
    const read = () => call(`m.requirementsText(${JSON.stringify(path.join(dir, 'requirements-test.txt'))})`) as string;
    const before = read();
    expect(before).toContain('a==1');
    fs.writeFileSync(path.join(dir, 'requirements.txt'), 'a==2\n');
    expect(read()).not.toEqual(before);
  });

  test('every container test environment holds the image’s own pins', () => {
    for (const name of ['inference', 'training']) {
      expect(fs.readFileSync(path.join(ROOT, 'containers', name, 'requirements-test.txt'), 'utf8')).toMatch(/^-r requirements\.txt$/m);
    }
  });

  test('the training environment holds each of sd-scripts’ own requirements at its version, or names why not', () => {
    const upstream = path.join(ROOT, '.venv', 'training', 'sd-scripts', 'requirements.txt');
    if (!fs.existsSync(upstream)) {
      if (IN_CI) throw new Error(`${upstream} is missing: npm test makes it before jest runs`);
      return console.warn(`Skipping: ${upstream} is made by npm test`);
    }
    const ours = (call(`m.requirementsText(${JSON.stringify(path.join(ROOT, 'containers', 'training', 'requirements-test.txt'))})`) as string).toLowerCase();
    const theirs = fs
      .readFileSync(upstream, 'utf8')
      .split('\n')
      .map((line) => line.replace(/#.*/, '').replace(/\[\w+\]/, '').trim().toLowerCase())
      .filter((line) => line && !line.startsWith('-e'));
    const unexplained = theirs.filter((line) => {
      const name = line.split(/[=<>[]/)[0];
      return !new RegExp(`^${line.replace(/[.[\]+]/g, '\\$&')}$`, 'm').test(ours) && !new RegExp(`^#.*\\b${name}\\b`, 'm').test(ours);
    });
    expect(theirs.length).toBeGreaterThan(10);
    expect(unexplained).toEqual([]);
  });
});
