import { duration } from '../../cli/format';
import { formatBytes, progressBar } from '../../cli/progress';
import { fakeIo } from './fake-io';

/** The lines a terminal shows for the writes: each \r starts the line again, ESC[K clears its rest. */
function visibleLines(writes: readonly string[]): string[] {
  return writes.flatMap((w) => w.split(/[\r\n]/)).map((l) => l.split('\x1b[K').join('')).filter((l) => l !== '');
}

describe('progress on a terminal', () => {
  test('one line redrawn in place: percent, bar, bytes, rate, ETA; then 100% and a newline', () => {
    const io = fakeIo({ isTty: true, columns: 72 });
    const bar = progressBar(io, { label: 'Uploading', total: 2_500_000 });
    bar.update(0);
    io.clock.now += 50;
    bar.update(100_000); // within 100 ms of the last redraw: not drawn
    io.clock.now += 950;
    bar.update(1_000_000);
    io.clock.now += 1000;
    bar.update(2_000_000);
    bar.finish();
    bar.update(2_500_000); // after finish: nothing
    expect(io.errWrites).toEqual([
      '\rUploading   0% [-------------]      0 B / 2.5 MB       --/s  ETA --    \x1b[K',
      '\rUploading  40% [#####--------]   1.0 MB / 2.5 MB   1.0 MB/s  ETA 2s    \x1b[K',
      '\rUploading  80% [##########---]   2.0 MB / 2.5 MB   1.0 MB/s  ETA 1s    \x1b[K',
      '\rUploading 100% [#############]   2.5 MB / 2.5 MB   1.3 MB/s  in 2s     \x1b[K\n',
    ]);
    expect(io.stdout()).toBe('');
  });

  test.each([20, 40, 72, 200])('no line is wider than %i columns (one short, so none wraps), and the bar keeps its width', (columns) => {
    const io = fakeIo({ isTty: true, columns });
    const bar = progressBar(io, { label: 'Uploading', total: 123_456_789_012 });
    for (let done = 0; done <= 123_456_789_012; done += 9_876_543_210) {
      io.clock.now += 1000;
      bar.update(done);
    }
    bar.finish();
    const lines = visibleLines(io.errWrites);
    expect(lines.length).toBeGreaterThan(10);
    for (const line of lines) expect(line.length).toBeLessThanOrEqual(columns - 1);
    expect(new Set(lines.map((l) => l.indexOf(']'))).size).toBe(1);
    expect(lines[lines.length - 1]).toMatch(/^Uploading 100%/);
    expect(io.errWrites[io.errWrites.length - 1].endsWith('\n')).toBe(true);
  });
});

describe('progress in a log (not a terminal)', () => {
  test('a whole line at each further 10%, then the final 100% with the time taken', () => {
    const io = fakeIo({ isTty: false });
    const bar = progressBar(io, { label: 'Uploading', total: 1000 });
    for (const [advance, done] of [[0, 50], [500, 100], [100, 150], [400, 250], [3000, 990], [100, 1000]]) {
      io.clock.now += advance;
      bar.update(done);
    }
    io.clock.now += 5700;
    bar.finish();
    expect(io.errWrites).toEqual([
      'Uploading: 10% (100 B / 1.0 kB, 200 B/s, ETA 5s)\n',
      'Uploading: 25% (250 B / 1.0 kB, 250 B/s, ETA 3s)\n',
      'Uploading: 99% (990 B / 1.0 kB, 248 B/s, ETA 1s)\n',
      'Uploading: 100% (1.0 kB / 1.0 kB) in 10s, 102 B/s\n',
    ]);
    expect(['\r', '\x1b'].filter((c) => io.errWrites.join('').includes(c))).toEqual([]);
  });

  test('an empty upload still ends at 100%; lines are cut to the width', () => {
    const io = fakeIo({ isTty: false, columns: 30 });
    const bar = progressBar(io, { label: 'Uploading', total: 0 });
    bar.update(0);
    bar.finish();
    expect(io.errWrites).toEqual(['Uploading: 100% (0 B / 0 B) i\n']);
  });
});

describe('units', () => {
  test('bytes in decimal units, durations in s, m, h', () => {
    expect([0, 999, 1000, 1_234_567, 9_999_999_999, 2e12].map(formatBytes)).toEqual(['0 B', '999 B', '1.0 kB', '1.2 MB', '10.0 GB', '2.0 TB']);
    expect([0, 59.4, 60, 125, 3600, 3725].map(duration)).toEqual(['0s', '59s', '1m 00s', '2m 05s', '1h 00m', '1h 02m']);
  });
});
