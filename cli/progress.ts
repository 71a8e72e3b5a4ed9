import type { Io } from './command';
import { duration } from './format';

/**
 * A progress bar by bytes. On a terminal: one line redrawn in place (percent, bar, bytes, rate,
 * ETA), at most every `redrawMs`. Elsewhere (CI logs, a pipe): one line at each further 10%, so a
 * log stays short and readable. No line is wider than the terminal.
 */

export interface ProgressBar {
  /** Bytes done so far (not an increment). */
  update(done: number): void;
  /** Draws 100% and ends the line. */
  finish(): void;
}

export interface ProgressOptions {
  readonly label: string;
  readonly total: number;
  /** Least time between two redraws on a terminal (default 100 ms). */
  readonly redrawMs?: number;
}

/** "812 B", "12.3 kB", "4.5 MB", "1.2 GB" (decimal units, as S3 and the console show sizes). */
export function formatBytes(bytes: number): string {
  if (bytes < 1000) return `${Math.round(bytes)} B`;
  const units = ['kB', 'MB', 'GB', 'TB'];
  let value = bytes / 1000;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${value.toFixed(1)} ${units[unit]}`;
}

/** Half a second of bytes is too little to tell a rate from noise. */
const MIN_RATE_MS = 500;

interface Measure {
  readonly percent: number;
  readonly done: number;
  /** Bytes per second, undefined until measurable. */
  readonly rate?: number;
  readonly elapsedSeconds: number;
}

function measure(done: number, total: number, elapsedMs: number): Measure {
  const percent = total <= 0 ? 100 : Math.min(100, Math.floor((done * 100) / total));
  const rate = elapsedMs >= MIN_RATE_MS ? (done * 1000) / elapsedMs : undefined;
  return { percent, done, elapsedSeconds: elapsedMs / 1000, ...(rate !== undefined ? { rate } : {}) };
}

/** Seconds left at the measured rate, rounded up: "ETA 0s" would read as done. */
function eta(m: Measure, total: number): string | undefined {
  return m.rate !== undefined && m.rate > 0 ? duration(Math.ceil((total - m.done) / m.rate)) : undefined;
}

function clip(line: string, columns: number): string {
  // One column short of the width: a line filling the last column wraps on many terminals.
  const width = Math.max(1, columns - 1);
  return line.length <= width ? line : line.slice(0, width);
}

/**
 * The terminal line. Its fields keep their width from one redraw to the next, so the bar does not
 * jump; the bar takes what the text leaves (at most 40 columns) and is dropped below 10.
 */
export function ttyLine(label: string, m: Measure, final: boolean, total: number, columns: number): string {
  const rate = (m.rate !== undefined ? `${formatBytes(m.rate)}/s` : '--/s').padStart(10);
  const tail = (final ? `in ${duration(m.elapsedSeconds)}` : `ETA ${eta(m, total) ?? '--'}`).padEnd(10);
  const head = `${label} ${String(m.percent).padStart(3)}%`;
  const rest = `${formatBytes(m.done).padStart(8)} / ${formatBytes(total)} ${rate}  ${tail}`;
  const room = Math.max(1, columns - 1) - head.length - rest.length - 4;
  if (room < 10) return clip(`${head} ${rest}`, columns);
  const width = Math.min(room, 40);
  const filled = Math.floor((width * m.percent) / 100);
  return clip(`${head} [${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${rest}`, columns);
}

/** A log line: "Uploading: 40% (10.9 MB / 27.4 MB, 3.1 MB/s, ETA 5s)". */
export function logLine(label: string, m: Measure, final: boolean, total: number): string {
  const bytes = `${formatBytes(m.done)} / ${formatBytes(total)}`;
  const rate = m.rate !== undefined ? `, ${formatBytes(m.rate)}/s` : '';
  if (final) return `${label}: 100% (${bytes}) in ${duration(m.elapsedSeconds)}${rate}`;
  const left = eta(m, total);
  return `${label}: ${m.percent}% (${bytes}${rate}${left !== undefined ? `, ETA ${left}` : ''})`;
}

export function progressBar(io: Io, options: ProgressOptions): ProgressBar {
  const { label, total } = options;
  const redrawMs = options.redrawMs ?? 100;
  const start = io.now();
  let lastDraw = Number.NEGATIVE_INFINITY;
  let lastDecile = 0;
  let finished = false;
  const draw = (done: number, final: boolean) => {
    const now = io.now();
    const m = measure(final ? total : done, total, now - start);
    if (io.isTty) {
      if (!final && now - lastDraw < redrawMs) return;
      lastDraw = now;
      // \r returns to the line's start, ESC[K clears what a longer earlier line left.
      io.err(`\r${ttyLine(label, m, final, total, io.columns)}\x1b[K${final ? '\n' : ''}`);
      return;
    }
    const decile = Math.floor(m.percent / 10);
    if (!final && (decile <= lastDecile || m.percent >= 100)) return;
    lastDecile = decile;
    io.err(`${clip(logLine(label, m, final, total), io.columns)}\n`);
  };
  return {
    update(done) {
      if (!finished) draw(Math.max(0, Math.min(done, total)), false);
    },
    finish() {
      if (finished) return;
      finished = true;
      draw(total, true);
    },
  };
}
