import * as fs from 'node:fs';
import * as path from 'node:path';

const CONTAINERS = path.resolve(__dirname, '..', 'containers');
const IMAGES = fs
  .readdirSync(CONTAINERS, { withFileTypes: true })
  .filter((entry) => entry.isDirectory() && fs.existsSync(path.join(CONTAINERS, entry.name, 'Dockerfile')))
  .map((entry) => entry.name);

/** The image references of a Dockerfile's FROM lines, with `${ARG}` replaced by the ARG's default. */
export function baseImages(dockerfile: string): string[] {
  const defaults = new Map<string, string>();
  const stages = new Set<string>();
  const images: string[] = [];
  for (const line of dockerfile.split('\n')) {
    const arg = /^ARG\s+(\w+)=(\S+)/.exec(line);
    if (arg) defaults.set(arg[1], arg[2]);
    const from = /^FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?/i.exec(line);
    if (from) {
      const image = from[1].replace(/\$\{(\w+)\}|\$(\w+)/g, (_, a: string, b: string) => defaults.get(a ?? b) ?? `<unset ${a ?? b}>`);
      if (!stages.has(image)) images.push(image);
      if (from[2]) stages.add(from[2]);
    }
  }
  return images;
}

/** Why an image reference is not pinned by tag, or undefined when it is. */
export function unpinned(image: string): string | undefined {
  if (image.includes('<unset')) return 'an ARG without a default';
  if (/@sha256:[0-9a-f]{64}$/.test(image)) return undefined;
  const tag = /^[^@]+:([\w][\w.-]{0,127})$/.exec(image.replace(/^[^/]+\.[^/]+(:\d+)?\//, ''))?.[1];
  if (!tag) return 'no tag';
  if (tag === 'latest') return 'the latest tag';
  return undefined;
}

/** Requirement lines that are not `name==version` (comments, blank lines and pip options aside). */
export function unpinnedRequirements(text: string): string[] {
  return text
    .split('\n')
    .map((line) => line.replace(/#.*/, '').trim())
    // A pin, or an include of a sibling requirements file (itself checked as one of the folder's files).
    .filter((line) => line && !/^[A-Za-z0-9][A-Za-z0-9._-]*(\[[\w,-]+\])?==[\w.+!-]+$/.test(line) && !/^-r [\w.-]+\.txt$/.test(line));
}

describe.each(IMAGES)('containers/%s', (name) => {
  const folder = path.join(CONTAINERS, name);
  const dockerfile = fs.readFileSync(path.join(folder, 'Dockerfile'), 'utf8');

  test('every FROM is pinned by tag, none is latest', () => {
    const images = baseImages(dockerfile);
    expect(images.length).toBeGreaterThan(0);
    expect(images.map((image) => [image, unpinned(image)])).toEqual(images.map((image) => [image, undefined]));
  });

  test('every Python requirement is pinned with ==', () => {
    const files = fs.readdirSync(folder).filter((file) => /^(requirements.*|constraints)\.txt$/.test(file));
    expect(files).toContain('requirements.txt');
    for (const file of files) {
      expect([file, unpinnedRequirements(fs.readFileSync(path.join(folder, file), 'utf8'))]).toEqual([file, []]);
    }
  });

  test('everything fetched at build time is fixed: Hub revisions are commit hashes', () => {
    const revisions = [...dockerfile.matchAll(/^ARG (\w*(?:REVISION|COMMIT))=(\S*)$/gm)].map(([, name, value]) => [name, value]);
    expect(revisions.filter(([, value]) => !/^[0-9a-f]{40}$/.test(value))).toEqual([]);
    expect(dockerfile).not.toMatch(/^ARG \w*(?:REVISION|COMMIT)\s*$/m);
  });

  test('the base image’s torch is at least 2.6 (sd-scripts and diffusers 0.40 need it) and held by the pip constraints', () => {
    const [base] = baseImages(dockerfile);
    const [, version = 'none'] = /pytorch:(\d+\.\d+\.\d+)-/.exec(base) ?? [];
    const [major, minor] = version.split('.').map(Number);
    expect(major * 100 + minor).toBeGreaterThanOrEqual(206);
    expect(fs.readFileSync(path.join(folder, 'constraints.txt'), 'utf8')).toMatch(new RegExp(`^torch==${version.replace(/\./g, '\\.')}$`, 'm'));
    expect(dockerfile).toMatch(/pip install [^\n]*-c \S*constraints\.txt/);
  });

  test('the build context is limited by a .dockerignore and the image is lean', () => {
    expect(fs.readFileSync(path.join(folder, '.dockerignore'), 'utf8')).toMatch(/^\*$/m);
    const runs = dockerfile.replace(/\\\n/g, ' ').split('\n').filter((line) => line.startsWith('RUN '));
    for (const run of runs.filter((line) => line.includes('apt-get install'))) {
      expect(run).toContain('--no-install-recommends');
      expect(run).toContain('rm -rf /var/lib/apt/lists/*');
    }
    expect(dockerfile).not.toMatch(/apt-get install[^&]*\b(vim|nano|emacs|less)\b/);
  });
});

describe('the training image', () => {
  const dockerfile = fs.readFileSync(path.join(CONTAINERS, 'training', 'Dockerfile'), 'utf8');

  test('sd-scripts is fetched at an exact commit and checked', () => {
    expect(dockerfile).toMatch(/^ARG SD_SCRIPTS_COMMIT=[0-9a-f]{40}$/m);
    expect(dockerfile).toContain('test "$(git -C /opt/sd-scripts rev-parse HEAD)" = "${SD_SCRIPTS_COMMIT}"');
  });

});

describe('the pin checks themselves', () => {
  test.each([
    ['FROM ubuntu\n', 'no tag'],
    ['FROM ubuntu:latest\n', 'the latest tag'],
    ['ARG BASE\nFROM ${BASE}\n', 'an ARG without a default'],
    ['FROM registry.example.com:5000/team/img\n', 'no tag'],
  ])('%j is refused: %s', (dockerfile, reason) => {
    expect(baseImages(dockerfile).map(unpinned)).toEqual([reason]);
  });

  test.each([
    'ARG B=pytorch/pytorch:2.7.1-cuda12.8-cudnn9-runtime\nFROM ${B} AS build\nFROM build\n',
    'FROM registry.example.com:5000/team/img:1.2\n',
    `FROM python@sha256:${'a'.repeat(64)}\n`,
  ])('%j is pinned', (dockerfile) => {
    expect(baseImages(dockerfile).map(unpinned)).toEqual([undefined]);
  });

  test('unpinned requirements are found', () => {
    expect(unpinnedRequirements('a==1.0\nb>=2\nc\n# note\nd[x]==3 # why\n-e .\n')).toEqual(['b>=2', 'c', '-e .']);
    expect(unpinnedRequirements('-r requirements.txt\n-r ../other/requirements.txt\n-r https://example.com/r.txt\n')).toEqual([
      '-r ../other/requirements.txt',
      '-r https://example.com/r.txt',
    ]);
  });
});
