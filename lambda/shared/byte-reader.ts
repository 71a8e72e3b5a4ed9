/**
 * Reads a stream of chunks by exact byte counts, holding at most one chunk beyond what was asked:
 * the tar reader's view of a gunzipped S3 body, which may be larger than the function's memory.
 */
export class ByteReader {
  private readonly chunks: AsyncIterator<Uint8Array>;
  private pending: Buffer = Buffer.alloc(0);
  private ended = false;
  /** Bytes handed out so far: where in the stream a problem is. */
  public offset = 0;

  constructor(source: AsyncIterable<Uint8Array>) {
    this.chunks = source[Symbol.asyncIterator]();
  }

  /** True once a next chunk is buffered; false at the end of the stream. */
  private async fill(): Promise<boolean> {
    while (this.pending.length === 0 && !this.ended) {
      const next = await this.chunks.next();
      if (next.done) this.ended = true;
      else this.pending = Buffer.from(next.value.buffer, next.value.byteOffset, next.value.byteLength);
    }
    return this.pending.length > 0;
  }

  private take(n: number): Buffer {
    const bytes = this.pending.subarray(0, n);
    this.pending = this.pending.subarray(bytes.length);
    this.offset += bytes.length;
    return bytes;
  }

  /** Exactly `n` bytes; `undefined` when the stream ends before the first of them, a shorter buffer when it ends within them. */
  async read(n: number): Promise<Buffer | undefined> {
    const parts: Buffer[] = [];
    let got = 0;
    while (got < n && (await this.fill())) {
      const part = this.take(n - got);
      parts.push(part);
      got += part.length;
    }
    return got === 0 && n > 0 ? undefined : Buffer.concat(parts, got);
  }

  /** Up to `n` bytes as they arrive, without copying; `left.count` says how many are still to come. */
  async *stream(left: { count: number }): AsyncGenerator<Buffer> {
    while (left.count > 0 && (await this.fill())) {
      const part = this.take(left.count);
      left.count -= part.length;
      yield part;
    }
  }

  /** Skips `n` bytes; false when the stream ended first. */
  async skip(n: number): Promise<boolean> {
    const left = { count: n };
    for await (const part of this.stream(left)) void part;
    return left.count === 0;
  }
}
