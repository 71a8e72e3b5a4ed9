/** Files named in one problem or kept in the skipped list of Prepare's output. */
export const MAX_LISTED = 20;

/** The first MAX_LISTED items and how many more, as the container lists them (dataset_check.py listing). */
export function listing(items: readonly string[]): string {
  const shown = items.slice(0, MAX_LISTED).join(', ');
  return items.length > MAX_LISTED ? `${shown} and ${items.length - MAX_LISTED} more` : shown;
}
