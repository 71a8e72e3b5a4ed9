import * as fs from 'node:fs';
import * as path from 'node:path';
import { validateHyperparameters } from '../../lambda/shared/hyperparameters';
import { type DatasetFolder, preflight, type PreflightOptions, type PreflightReport } from '../../lambda/prepare/preflight';
import { readImageHeader } from '../../lambda/prepare/image-header';
import { confine } from '../../lambda/prepare/folder-index';
import { type Case, CASES, FIXTURES, fixtureFiles, loadCase } from '../fixtures/datasets/cases';

/**
 * The pre-flight on the fixtures of test/fixtures/datasets/: each case.json says what the training
 * container does with the folder (containers/training/tests/test_preflight_fixtures.py holds the
 * container to it), and the pre-flight must reach the same outcome.
 */

/** Every file under `root` but case.json, as path → bytes. */
function filesOf(root: string): Map<string, Uint8Array> {
  return new Map(fixtureFiles(root).map((file) => [file, fs.readFileSync(path.join(root, file))]));
}

/** A DatasetFolder over bytes in memory, recording what was read. */
function memoryFolder(files: Map<string, Uint8Array>, reads: Array<{ path: string; bytes: number }> = []): DatasetFolder {
  return {
    list: async () => [...files].map(([p, bytes]) => ({ path: p, size: bytes.length })),
    head: async (p, bytes) => {
      reads.push({ path: p, bytes });
      return files.get(p)?.subarray(0, bytes);
    },
  };
}

function options(spec: Pick<Case, 'modelType' | 'hyperparameters'>): PreflightOptions {
  const validated = validateHyperparameters({ ...spec.hyperparameters, model_type: spec.modelType });
  if (!validated.ok) throw new Error(validated.message);
  return { modelType: spec.modelType, hyperparameters: validated.values };
}

const skippedPaths = (report: PreflightReport) => report.skipped.map((entry) => entry.slice(0, entry.indexOf(': ')));

const PNG = fs.readFileSync(path.join(FIXTURES, 'clean', 'a.png'));
const JPEG = fs.readFileSync(path.join(FIXTURES, 'clean', 'b.jpg'));
const utf8 = (text: string) => new Uint8Array(Buffer.from(text, 'utf8'));

describe.each(CASES)('fixture %s', (name) => {
  const { spec, root } = loadCase(name);
  test(spec.description, async () => {
    const report = await preflight(memoryFolder(filesOf(root)), options(spec));
    const expected = spec.expected;
    if (expected.outcome === 'ok') {
      expect(report.problems).toEqual([]);
      expect({ images: report.images, captions: report.captions, skipped: skippedPaths(report) }).toEqual({
        images: expected.images,
        captions: expected.captions,
        skipped: expected.skipped,
      });
      expect(report.uncheckedImages).toBe(0);
      // Images the job captions (caption_missing); containers/training/tests/test_captioning.py holds the container to the same number.
      expect(report.captionsToWrite).toBe(expected.captionsToWrite ?? 0);
    } else {
      expect(report.findings.map((finding) => finding.kind)).toEqual([expected.kind]);
      expect(report.findings[0].files).toEqual(expected.files);
      for (const mention of expected.mentions) expect(report.problems[0]).toContain(mention);
    }
  });
});

test('the fixtures cover both outcomes and every case the issue names', () => {
  const outcomes = new Set(CASES.map((name) => loadCase(name).spec.expected.outcome));
  expect(outcomes).toEqual(new Set(['ok', 'refused']));
  for (const name of ['toml-parent-escape', 'toml-absolute-etc', 'toml-channel-path', 'captions-missing', 'captions-missing-allowed', 'class-tokens', 'empty-caption', 'png-is-text', 'jpeg-garbage', 'skipped-files', 'clean']) {
    expect(CASES).toContain(name);
  }
});

describe('negative controls: the clean folder with one fault', () => {
  const clean = () => filesOf(path.join(FIXTURES, 'clean'));
  const run = async (files: Map<string, Uint8Array>, hyperparameters: Record<string, unknown> = {}) => preflight(memoryFolder(files), options({ modelType: 'sd15', hyperparameters }));

  test('the clean folder passes with every image checked', async () => {
    const report = await run(clean());
    expect(report).toMatchObject({ images: 4, captions: 4, problems: [], checkedImages: 4, uncheckedImages: 0 });
  });

  test.each([
    ['an image that is text', (f: Map<string, Uint8Array>) => f.set('a.png', utf8('hello')), 'undecodable'],
    ['a caption emptied', (f: Map<string, Uint8Array>) => f.set('a.txt', new Uint8Array()), 'empty-caption'],
    ['a caption removed', (f: Map<string, Uint8Array>) => f.delete('a.txt'), 'missing-captions'],
    ['a dataset.toml escaping', (f: Map<string, Uint8Array>) => f.set('dataset.toml', utf8("[[datasets]]\n[[datasets.subsets]]\nimage_dir = '..'\n")), 'path-outside'],
    ['a PNG with a broken header checksum', (f: Map<string, Uint8Array>) => f.set('a.png', Uint8Array.from(PNG, (b, i) => (i === 20 ? b ^ 1 : b))), 'undecodable'],
  ])('%s is refused', async (_, fault, kind) => {
    const files = clean();
    fault(files);
    expect((await run(files)).findings.map((f) => f.kind)).toEqual([kind]);
  });

  test('a comment-only dataset.toml is the generated configuration, like no dataset.toml', async () => {
    const files = clean();
    files.set('dataset.toml', utf8('# defaults\n'));
    expect(await run(files)).toMatchObject({ images: 4, problems: [] });
  });

  test('an empty caption is refused even with allow_missing_captions; a missing one is not', async () => {
    const emptied = clean().set('a.txt', new Uint8Array());
    expect((await run(emptied, { allow_missing_captions: true })).findings.map((f) => f.kind)).toEqual(['empty-caption']);
    const removed = clean();
    removed.delete('a.txt');
    expect(await run(removed, { allow_missing_captions: true })).toMatchObject({ problems: [], captions: 3 });
  });

  test('a too-small image passes once bucketing is off (the container\'s own remedy)', async () => {
    const small = filesOf(path.join(FIXTURES, 'too-small'));
    expect((await run(small)).findings.map((f) => f.kind)).toEqual(['too-small']);
    small.set('dataset.toml', utf8("[[datasets]]\nenable_bucket = false\n[[datasets.subsets]]\nimage_dir = '.'\n"));
    expect((await run(small)).problems).toEqual([]);
  });

  test('bucket_reso_steps = 32 is refused for SD 1.5 and accepted for SDXL', async () => {
    const files = clean().set('dataset.toml', utf8("[[datasets]]\nresolution = 1024\nenable_bucket = true\nbucket_reso_steps = 32\n[[datasets.subsets]]\nimage_dir = '.'\n"));
    expect((await run(files)).findings.map((f) => f.kind)).toEqual(['bucket-settings']);
    expect((await preflight(memoryFolder(files), options({ modelType: 'sdxl', hyperparameters: {} }))).problems).toEqual([]);
  });

  test('an integer where kohya wants a decimal is refused; the decimal passes', async () => {
    const toml = (value: string) => utf8(`[[datasets]]\nnetwork_multiplier = ${value}\n[[datasets.subsets]]\nimage_dir = '.'\n`);
    expect((await run(clean().set('dataset.toml', toml('1')))).problems[0]).toContain('datasets[0].network_multiplier = 1 must be a number with a decimal point');
    expect((await run(clean().set('dataset.toml', toml('1.0')))).problems).toEqual([]);
  });

  test('a caption augmentation is refused with cache_text_encoder_outputs (SDXL), in any table; without the caching it passes', async () => {
    const toml = (general: string) => utf8(`[general]\n${general}\n[[datasets]]\n[[datasets.subsets]]\nimage_dir = '.'\n`);
    const sdxl = (cache: boolean) => options({ modelType: 'sdxl', hyperparameters: { cache_text_encoder_outputs: cache, network_train_unet_only: true } });
    const shuffled = clean().set('dataset.toml', toml('shuffle_caption = true'));
    expect((await preflight(memoryFolder(shuffled), sdxl(true))).findings.map((f) => [f.kind, f.message.slice(0, 60)])).toEqual([
      ['cache-combination', 'cache_text_encoder_outputs cannot be combined with shuffle_c'],
    ]);
    expect((await preflight(memoryFolder(shuffled), sdxl(false))).problems).toEqual([]);
    // Python's truth: a rate of 0.0 is off, as the container reads it.
    expect((await preflight(memoryFolder(clean().set('dataset.toml', toml('caption_dropout_rate = 0.0'))), sdxl(true))).problems).toEqual([]);
  });
});

describe('caption_missing', () => {
  const captionless = (extra: Record<string, string | Uint8Array> = {}) =>
    memoryFolder(new Map<string, Uint8Array>([['a.png', PNG], ['a.txt', utf8('a red square')], ['b.png', PNG], ['sub/c.png', PNG], ...Object.entries(extra).map(([k, v]): [string, Uint8Array] => [k, typeof v === 'string' ? utf8(v) : v])]));

  test('flux1 captions by default; sd15 and sdxl refuse by default and caption when asked', async () => {
    const flux = await preflight(captionless(), options({ modelType: 'flux1', hyperparameters: {} }));
    expect({ problems: flux.problems, captionsToWrite: flux.captionsToWrite, captions: flux.captions }).toEqual({ problems: [], captionsToWrite: 2, captions: 1 });
    for (const modelType of ['sd15', 'sdxl'] as const) {
      const refused = await preflight(captionless(), options({ modelType, hyperparameters: {} }));
      expect(refused.findings.map((finding) => [finding.kind, finding.files])).toEqual([['missing-captions', ['b.png', 'sub/c.png']]]);
      expect(refused.captionsToWrite).toBe(0);
      expect((await preflight(captionless(), options({ modelType, hyperparameters: { caption_missing: true } }))).captionsToWrite).toBe(2);
    }
    // The deploy-wide or per-run false turns flux1's default off.
    expect((await preflight(captionless(), options({ modelType: 'flux1', hyperparameters: { caption_missing: false } }))).findings.map((finding) => finding.kind)).toEqual(['missing-captions']);
  });

  test('a .caption subset is captioned as .caption; a blank caption file is not replaced, so it stays refused', async () => {
    const toml = "[[datasets]]\n[[datasets.subsets]]\nimage_dir = 'sub'\ncaption_extension = '.caption'\n";
    const report = await preflight(captionless({ 'dataset.toml': toml }), options({ modelType: 'sd15', hyperparameters: { caption_missing: true } }));
    expect({ problems: report.problems, captionsToWrite: report.captionsToWrite }).toEqual({ problems: [], captionsToWrite: 1 });
    const blank = await preflight(captionless({ 'b.txt': '\nsecond line' }), options({ modelType: 'sd15', hyperparameters: { caption_missing: true } }));
    expect(blank.findings.map((finding) => [finding.kind, finding.files])).toEqual([['missing-captions', ['b.png']]]);
    expect(blank.problems[0]).toContain('caption_missing captions only images of an image_dir subset without class_tokens');
  });
});

describe('bounds', () => {
  const many = (count: number) => {
    const files = new Map<string, Uint8Array>();
    for (let i = 0; i < count; i++) {
      files.set(`i${String(i).padStart(3, '0')}.png`, PNG);
      files.set(`i${String(i).padStart(3, '0')}.txt`, utf8('a caption'));
    }
    return files;
  };

  test('past maxImages, images are counted as not checked, and a note says so', async () => {
    const files = many(10).set('i009.png', utf8('not an image'));
    const report = await preflight(memoryFolder(files), { ...options({ modelType: 'sd15', hyperparameters: {} }), limits: { maxImages: 5 } });
    // The broken image is past the bound: not refused, but not passed silently either.
    expect(report).toMatchObject({ images: 10, checkedImages: 5, uncheckedImages: 5, problems: [] });
    expect(report.notes[0]).toContain('5 image(s) were not checked');
    // Control: within the bound it is refused.
    expect((await preflight(memoryFolder(files), options({ modelType: 'sd15', hyperparameters: {} }))).findings[0].files).toEqual(['i009.png']);
  });

  test('reads stop at the deadline and at most `concurrency` run at once', async () => {
    const files = many(40);
    let open = 0;
    let most = 0;
    const inner = memoryFolder(files);
    const slow: DatasetFolder = {
      ...inner,
      head: async (p, bytes) => {
        most = Math.max(most, ++open);
        await new Promise((resolve) => setTimeout(resolve, 20));
        open -= 1;
        return inner.head(p, bytes);
      },
    };
    const report = await preflight(slow, { ...options({ modelType: 'sd15', hyperparameters: {} }), limits: { concurrency: 4, deadlineMs: 70 } });
    expect(most).toBe(4);
    expect(report.checkedImages).toBeGreaterThan(0);
    expect(report.checkedImages + report.uncheckedImages).toBe(40);
    expect(report.uncheckedImages).toBeGreaterThan(0);
  });

  test('each image is read from its start, 4 KiB at most; a JPEG whose frame header is further is read again up to 64 KiB', async () => {
    // A JPEG with a 10 KB comment segment before its frame header.
    const comment = new Uint8Array(10_004);
    comment.set([0xff, 0xfe, 0x27, 0x12]); // COM, length 10002
    const padded = new Uint8Array([...JPEG.subarray(0, 2), ...comment, ...JPEG.subarray(2)]);
    const reads: Array<{ path: string; bytes: number }> = [];
    const files = new Map([['a.jpg', padded], ['a.txt', utf8('a caption')], ['b.png', PNG], ['b.txt', utf8('b')]]);
    const report = await preflight(memoryFolder(files, reads), options({ modelType: 'sd15', hyperparameters: {} }));
    expect(report.problems).toEqual([]);
    expect(reads.filter((r) => r.path === 'a.jpg').map((r) => r.bytes)).toEqual([4096, 65536]);
    expect(reads.filter((r) => r.path === 'b.png').map((r) => r.bytes)).toEqual([4096]);
  });

  test('a vanished file is reported, for Prepare to wait and look again', async () => {
    const files = many(2);
    const inner = memoryFolder(files);
    const report = await preflight({ ...inner, head: async (p, b) => (p === 'i001.png' ? undefined : inner.head(p, b)) }, options({ modelType: 'sd15', hyperparameters: {} }));
    expect(report.vanished).toEqual(['i001.png']);
  });
});

describe('image headers, as Pillow opens them', () => {
  test.each([
    ['PNG', 'clean/a.png', { kind: 'sized', format: 'png', width: 64, height: 64 }],
    ['JPEG', 'clean/b.jpg', { kind: 'sized', format: 'jpeg', width: 64, height: 64 }],
    ['WEBP', 'clean/c.webp', { kind: 'sized', format: 'webp', width: 64, height: 64 }],
    ['BMP', 'clean/d.bmp', { kind: 'sized', format: 'bmp', width: 64, height: 64 }],
    ['small PNG', 'too-small/b.png', { kind: 'sized', format: 'png', width: 32, height: 32 }],
  ])('%s: its size', (_, file, expected) => {
    expect(readImageHeader(fs.readFileSync(path.join(FIXTURES, file)), true)).toEqual(expected);
  });

  test.each(fs.readdirSync(path.join(FIXTURES, 'formats')).filter((file) => file !== 'case.json'))('formats/%s: the size in its name, as Pillow reads it', (file) => {
    const [, width, height] = /-(\d+)x(\d+)\.\w+$/.exec(file) ?? [];
    const bytes = fs.readFileSync(path.join(FIXTURES, 'formats', file));
    const header = readImageHeader(bytes, true, bytes.length);
    expect(header).toMatchObject({ kind: 'sized', format: file.split('-')[0], width: Number(width), height: Number(height) });
  });

  test('a BMP whose pixel data would end past the file is refused; the whole file passes', () => {
    const bmp = fs.readFileSync(path.join(FIXTURES, 'formats', 'bmp-gray-64x70.bmp'));
    expect(readImageHeader(bmp, true, bmp.length)).toMatchObject({ kind: 'sized' });
    expect(readImageHeader(bmp.subarray(0, 4096), false, bmp.length - 1)).toMatchObject({ kind: 'invalid', reason: expect.stringContaining('pixel data is cut short') });
  });

  test('a JPEG cut before its frame header: unknown size when more is to come, refused when that is the whole file', () => {
    const start = JPEG.subarray(0, 100);
    expect(readImageHeader(start, false)).toEqual({ kind: 'unsized', format: 'jpeg' });
    expect(readImageHeader(start, true)).toMatchObject({ kind: 'invalid' });
  });

  test.each([
    ['text', utf8('this is not an image')],
    ['nothing', new Uint8Array()],
    ['a JPEG start then garbage', new Uint8Array([0xff, 0xd8, 0xff, 0x41, 0x42, 0x43])],
    ['a PNG signature alone', PNG.subarray(0, 8)],
    ['a RIFF that is not WEBP', utf8('RIFF\0\0\0\0WAVEfmt ')],
    ['a BMP of an unknown header size', new Uint8Array([0x42, 0x4d, ...new Array(12).fill(0), 99, 0, 0, 0, ...new Array(12).fill(0)])],
  ])('%s is refused', (_, bytes) => {
    expect(readImageHeader(bytes, true).kind).toBe('invalid');
  });
});

describe('dataset.toml paths, as the container maps them', () => {
  test.each([
    ['images', '', { path: 'images' }],
    ['./images/', '', { path: 'images' }],
    ['', '', { path: '' }],
    ['/opt/ml/input/data/dataset/images', '', { path: 'images' }],
    ['/opt/ml/input/data/images/', '', { path: '' }],
    ['a/../b', '', { path: 'b' }],
    ['../dataset/images', '', { path: 'images' }],
    ['../../../etc', '', { problem: 'escapes' }],
    ['..', '', { problem: 'escapes' }],
    ['/opt/ml/input/data/dataset/../../config', '', { problem: 'escapes' }],
    ['/etc', '', { problem: 'absolute' }],
    ['/opt/ml/model', '', { problem: 'absolute' }],
    ['//opt/ml/input/data/dataset/images', '', { problem: 'absolute' }],
    ['../x.png', 'sub', { problem: 'escapes' }],
    ['x.png', 'sub', { path: 'sub/x.png' }],
  ])('%s (from "%s")', (value, base, expected) => {
    expect(confine(value, base)).toEqual(expected);
  });
});
