import { gzipSync } from 'node:zlib';

/**
 * Tar archives built by hand, header field by header field (POSIX ustar, or GNU's magic), for the
 * tests of the registry's tar reader and of register: a model.tar.gz as SageMaker writes one, and
 * the malformed ones no real tar would write.
 */

export interface TarFile {
  readonly path: string;
  readonly body?: Buffer;
  /** Type flag: '0' regular file (default), '5' directory, '2' symlink, '1' hard link, 'L' GNU long name, 'x' pax. */
  readonly type?: string;
  /** The size field, when it must differ from the body's length (a lie, for the truncation tests). */
  readonly size?: number;
  readonly linkTarget?: string;
}

const BLOCK = 512;

function field(block: Buffer, start: number, length: number, value: string): void {
  block.write(value, start, Math.min(length, Buffer.byteLength(value)), 'utf8');
}

function octal(value: number, length: number): string {
  return `${value.toString(8).padStart(length - 1, '0')}\0`;
}

/** One header block, its checksum computed as tar does (the checksum field counted as spaces). */
export function tarHeader(file: TarFile, options: { gnu?: boolean } = {}): Buffer {
  const block = Buffer.alloc(BLOCK);
  field(block, 0, 100, file.path);
  field(block, 100, 8, octal(0o644, 8));
  field(block, 108, 8, octal(0, 8));
  field(block, 116, 8, octal(0, 8));
  field(block, 124, 12, octal(file.size ?? file.body?.length ?? 0, 12));
  field(block, 136, 12, octal(1735732800, 12));
  field(block, 156, 1, file.type ?? '0');
  if (file.linkTarget) field(block, 157, 100, file.linkTarget);
  if (options.gnu) field(block, 257, 8, 'ustar  \0');
  else field(block, 257, 8, 'ustar\x0000');
  field(block, 265, 32, 'root');
  field(block, 297, 32, 'root');
  return sealHeader(block);
}

/** Writes the checksum of `block` into it (six octal digits, NUL, space). */
export function sealHeader(block: Buffer): Buffer {
  block.fill(0x20, 148, 156);
  const sum = block.reduce((a, b) => a + b, 0);
  field(block, 148, 8, `${sum.toString(8).padStart(6, '0')}\0 `);
  return block;
}

function padding(length: number): Buffer {
  return Buffer.alloc((BLOCK - (length % BLOCK)) % BLOCK);
}

/** An archive of `files` in order, ended by two zero blocks (unless `end` is false). */
export function tarArchive(files: TarFile[], options: { gnu?: boolean; end?: boolean } = {}): Buffer {
  const parts: Buffer[] = [];
  for (const file of files) {
    parts.push(tarHeader(file, options));
    if (file.body) parts.push(file.body, padding(file.body.length));
  }
  if (options.end !== false) parts.push(Buffer.alloc(2 * BLOCK));
  return Buffer.concat(parts);
}

/**
 * A model.tar.gz as a training job leaves it: the container's /opt/ml/model, that is
 * `<output_name>.safetensors` and `training-metadata.json` at the top level
 * (containers/training/README.md), gzipped.
 */
export function modelTarGz(lora: Buffer, options: { outputName?: string; extra?: TarFile[] } = {}): Buffer {
  const metadata = Buffer.from(JSON.stringify({ sd_scripts_version: 'v0.10.1', base_model: { kind: 'hub' } }));
  return gzipSync(
    tarArchive([
      { path: 'training-metadata.json', body: metadata },
      { path: `${options.outputName ?? 'pokemon'}.safetensors`, body: lora },
      ...(options.extra ?? []),
    ]),
  );
}
