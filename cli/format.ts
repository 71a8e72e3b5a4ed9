/**
 * Plain-text formatting shared by the commands (status, runs, loras, cleanup, the upload progress): aligned
 * tables and short durations. Nothing here talks to AWS.
 */

/** Seconds as "45s", "12m 05s" or "2h 03m": short enough for a table cell, exact enough to watch. */
export function duration(seconds: number): string {
  const whole = Math.max(0, Math.round(seconds));
  if (whole < 60) return `${whole}s`;
  const minutes = Math.floor(whole / 60);
  if (minutes < 60) return `${minutes}m ${String(whole % 60).padStart(2, '0')}s`;
  return `${Math.floor(minutes / 60)}h ${String(minutes % 60).padStart(2, '0')}m`;
}

/** Seconds between two ISO times, or from `start` to `nowMs` when the thing is still going; undefined without a start. */
export function elapsedSeconds(start: string | undefined, stop: string | undefined, nowMs: number): number | undefined {
  if (start === undefined) return undefined;
  const from = Date.parse(start);
  const to = stop !== undefined ? Date.parse(stop) : nowMs;
  return Number.isNaN(from) || Number.isNaN(to) ? undefined : (to - from) / 1000;
}

/** An ISO time as "2025-01-01 12:00:05Z": a table's width matters more than milliseconds. */
export function shortTime(iso: string | undefined): string {
  if (iso === undefined) return '-';
  const parsed = new Date(iso);
  return Number.isNaN(parsed.getTime()) ? iso : `${parsed.toISOString().slice(0, 19).replace('T', ' ')}Z`;
}

/**
 * Rows under a header, each column as wide as its widest cell, two spaces apart; the last column
 * is not padded, so long values (an error) do not push trailing blanks.
 */
export function table(header: readonly string[], rows: ReadonlyArray<readonly string[]>): string {
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => (row[column] ?? '').length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((cell, column) => (column === cells.length - 1 ? cell : cell.padEnd(widths[column])))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)].join('\n');
}

/** An error as one line for the terminal: its name when it says something, then its message. */
export function errorLine(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  return error.name && error.name !== 'Error' ? `${error.name}: ${error.message}` : error.message;
}

/** JSON as the `--json` flag prints it: indented, one trailing newline left to the printer. */
export function json(value: unknown): string {
  return JSON.stringify(value, null, 2);
}
