import { execFileSync, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { ByteReader } from '../../lambda/shared/byte-reader';
import { type TarEntry, tarEntries } from '../../lambda/shared/tar';
import { sealHeader, tarArchive, tarHeader } from '../support/tar-archive';

/** Every entry of `archive` (fed in `chunk`-byte pieces, so headers and data straddle chunks), with the SHA-256 of its data. */
async function list(archive: Buffer, chunk = 700): Promise<Array<TarEntry & { sha256: string }>> {
  const pieces = Array.from({ length: Math.ceil(archive.length / chunk) }, (_, i) => archive.subarray(i * chunk, (i + 1) * chunk));
  const found: Array<TarEntry & { sha256: string }> = [];
  for await (const { entry, data } of tarEntries(Readable.from(pieces))) {
    const hash = createHash('sha256');
    for await (const part of data) hash.update(part);
    found.push({ ...entry, sha256: hash.digest('hex') });
  }
  return found;
}

const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');
const LORA = randomBytes(70_001);
/** A path of 131 bytes: over ustar's 100-byte name field, splittable into its prefix field. */
const LONG_DIR = 'd'.repeat(80);
const LONG_FILE = `${'n'.repeat(40)}.txt`;
const METADATA = Buffer.from('{"sd_scripts_version": "v0.10.1"}');

describe('archives written by the real tar binary', () => {
  const tarAvailable = spawnSync('tar', ['--version']).status === 0;
  const testWithTar = tarAvailable ? test : test.skip;
  let dir: string;

  beforeAll(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'tar-test-'));
    mkdirSync(path.join(dir, 'model', 'sub', LONG_DIR), { recursive: true });
    writeFileSync(path.join(dir, 'model', 'pokemon.safetensors'), LORA);
    writeFileSync(path.join(dir, 'model', 'training-metadata.json'), METADATA);
    writeFileSync(path.join(dir, 'model', 'sub', LONG_DIR, LONG_FILE), 'long');
    symlinkSync('pokemon.safetensors', path.join(dir, 'model', 'link.safetensors'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  /** What `tar --format=<format> -c -C model <members>` writes. */
  const tar = (format: string, members: string[]) => execFileSync('tar', [`--format=${format}`, '--sort=name', '-c', '-C', path.join(dir, 'model'), ...members]);

  testWithTar.each(['gnu', 'ustar', 'posix'])('--format=%s: every entry, its type, size and data, a long name included', async (format) => {
    const entries = await list(tar(format, ['.']));
    const byPath = Object.fromEntries(entries.map((e) => [e.path.replace(/\/$/, ''), e]));
    expect(byPath['./pokemon.safetensors']).toEqual({ path: './pokemon.safetensors', type: 'file', size: LORA.length, sha256: sha256(LORA) });
    expect(byPath['./training-metadata.json']).toMatchObject({ type: 'file', size: METADATA.length, sha256: sha256(METADATA) });
    expect(byPath['./link.safetensors']).toMatchObject({ type: 'symlink', size: 0 });
    expect(byPath['.']).toMatchObject({ type: 'directory' });
    // Over ustar's 100-byte name: GNU's long-name entry, ustar's prefix field, or a pax path.
    expect(byPath[`./sub/${LONG_DIR}/${LONG_FILE}`]).toMatchObject({ type: 'file', size: 4 });
  });

  testWithTar('members named without ./ keep their plain names', async () => {
    const entries = await list(tar('gnu', ['training-metadata.json', 'pokemon.safetensors']));
    expect(entries.map((e) => e.path)).toEqual(['training-metadata.json', 'pokemon.safetensors']);
    expect(entries[1].sha256).toBe(sha256(LORA));
  });

  testWithTar('entries whose data is not read are skipped, whole, before the next header', async () => {
    const paths: string[] = [];
    for await (const { entry } of tarEntries(Readable.from([tar('gnu', ['pokemon.safetensors', 'training-metadata.json'])]))) paths.push(entry.path);
    expect(paths).toEqual(['pokemon.safetensors', 'training-metadata.json']);
  });
});

describe('hand-built archives', () => {
  test('GNU magic, a GNU long name and a pax path apply to the entry after them', async () => {
    const longName = `${'d'.repeat(150)}/pokemon.safetensors`;
    const archive = tarArchive(
      [
        { path: '././@LongLink', type: 'L', body: Buffer.from(`${longName}\0`) },
        { path: longName.slice(0, 99), body: LORA },
        { path: 'PaxHeaders/x', type: 'x', body: paxRecord('path', './from-pax.bin') },
        { path: 'ignored', body: METADATA },
      ],
      { gnu: true },
    );
    expect((await list(archive)).map((e) => [e.path, e.size])).toEqual([
      [longName, LORA.length],
      ['./from-pax.bin', METADATA.length],
    ]);
  });

  test('a size in base-256 (GNU, for files of 8 GiB and more) is read', async () => {
    const header = tarHeader({ path: 'big.bin', body: LORA });
    header.fill(0, 124, 136);
    header[124] = 0x80;
    header.writeUIntBE(LORA.length, 130, 6);
    const archive = Buffer.concat([sealHeader(header), LORA, Buffer.alloc(512 - (LORA.length % 512)), Buffer.alloc(1024)]);
    expect(await list(archive)).toEqual([{ path: 'big.bin', type: 'file', size: LORA.length, sha256: sha256(LORA) }]);
  });

  test.each([
    ['a header that fails its checksum', () => flip(tarArchive([{ path: 'a.bin', body: LORA }]), 10), 'fails its checksum: the archive is corrupt'],
    ['a block that is not a tar header', () => Buffer.concat([Buffer.from('PK\x03\x04'), Buffer.alloc(1020, 1)]), 'is not a ustar or GNU tar header'],
    ['an archive cut inside a file', () => tarArchive([{ path: 'a.bin', body: LORA }], { end: false }).subarray(0, 512 + 1000), 'ends inside the data of a.bin: it is truncated'],
    ['an archive cut inside a header', () => tarArchive([{ path: 'a.bin', body: METADATA }]).subarray(0, 1024 + 100), 'ends inside the header at byte 1024'],
    ['an archive without its end block', () => tarArchive([{ path: 'a.bin', body: METADATA }], { end: false }), 'without its end-of-archive block'],
    ['a size that is not octal', () => withField(tarArchive([{ path: 'a.bin', body: METADATA }]), 124, '00000000x99\0'), "a size that is not octal (\"00000000x99\")"],
    ['a pax header that is not records', () => tarArchive([{ path: 'p', type: 'x', body: Buffer.from('garbage') }, { path: 'a', body: METADATA }]), 'the pax header at byte 0 is malformed'],
  ])('%s is a TarError saying so', async (_, archive, message) => {
    await expect(list(archive())).rejects.toMatchObject({ name: 'TarError', message: expect.stringContaining(message) });
  });

  test('control: the unaltered archives of those cases read whole', async () => {
    expect(await list(tarArchive([{ path: 'a.bin', body: LORA }]))).toEqual([{ path: 'a.bin', type: 'file', size: LORA.length, sha256: sha256(LORA) }]);
  });
});

describe('ByteReader', () => {
  test('exact reads across chunk boundaries, a short read at the end, then undefined', async () => {
    const reader = new ByteReader(Readable.from([Buffer.from('abc'), Buffer.from('defg'), Buffer.from('h')]));
    expect((await reader.read(5))?.toString()).toBe('abcde');
    expect((await reader.read(2))?.toString()).toBe('fg');
    expect((await reader.read(4))?.toString()).toBe('h');
    expect(await reader.read(1)).toBeUndefined();
    expect(reader.offset).toBe(8);
  });
});

/** `archive` with one byte of its first header changed. */
function flip(archive: Buffer, at: number): Buffer {
  const copy = Buffer.from(archive);
  copy[at] ^= 0xff;
  return copy;
}

/** `archive` with a field of its first header rewritten, and its checksum sealed again. */
function withField(archive: Buffer, at: number, value: string): Buffer {
  const copy = Buffer.from(archive);
  copy.write(value, at, 'latin1');
  sealHeader(copy.subarray(0, 512));
  return copy;
}

/** One pax record, `<length> <key>=<value>\n`, its length counting itself. */
function paxRecord(key: string, value: string): Buffer {
  const rest = ` ${key}=${value}\n`;
  let length = rest.length + 1;
  while (String(length).length + rest.length !== length) length += 1;
  return Buffer.from(`${length}${rest}`);
}
