/**
 * Python's idea of lines and blanks, which the container (and kohya) read captions and
 * metadata.jsonl with; JavaScript's split and trim draw both lines slightly differently.
 */

/** The characters of Python's str.isspace(), which strip() removes. */
const SPACE = '\\t\\n\\v\\f\\r\\x1c-\\x1f \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';
/** Python's splitlines() boundaries. */
// eslint-disable-next-line no-control-regex -- Python splits lines at these separator control characters too
export const LINE_BREAK = new RegExp('\\r\\n|[\\n\\r\\v\\f\\x1c-\\x1e\\x85\\u2028\\u2029]');
const NOT_SPACE = new RegExp(`[^${SPACE}]`);

/** Whether Python's text.strip() leaves anything. */
export function hasText(text: string): boolean {
  return NOT_SPACE.test(text);
}
