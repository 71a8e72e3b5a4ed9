import { closest } from '../lambda/shared/suggest';
import { UsageError } from './command';

/**
 * A small argv parser: positionals, `--flag value`, `--flag=value`, boolean `--flag` / `--no-flag`,
 * repeatable flags, `--` ending the flags. An unknown flag is a UsageError naming the known ones.
 */

export interface FlagSpec {
  readonly type: 'string' | 'boolean';
  /** One line for `--help`. */
  readonly description: string;
  /** The value's placeholder in `--help`, e.g. "<name>". */
  readonly value?: string;
  /** A one-letter alias, e.g. 'h' for `-h`. */
  readonly short?: string;
  /** A string flag that may be given more than once (read with `strings`). */
  readonly repeatable?: boolean;
  /** A boolean flag that is on by default: `--help` shows it as --[no-]name. */
  readonly negatable?: boolean;
}

export type FlagSpecs = Readonly<Record<string, FlagSpec>>;

export interface ParsedArgs {
  readonly positionals: readonly string[];
  /** The flags given: strings (arrays for repeatable ones) and booleans, by flag name without dashes. */
  readonly flags: Readonly<Record<string, string | boolean | readonly string[]>>;
  /** A string flag's value, undefined when not given. */
  string(name: string): string | undefined;
  /** Every value of a repeatable flag, in order. */
  strings(name: string): readonly string[];
  /** A boolean flag's value, `fallback` when not given. */
  boolean(name: string, fallback?: boolean): boolean;
  /** A string flag as an integer in [min, max], undefined when not given; a UsageError otherwise. */
  integer(name: string, min: number, max: number): number | undefined;
}

function known(names: readonly string[]): string {
  return names.map((name) => `--${name}`).join(', ');
}

/** Which flags an unknown-flag error names, and what it adds about the others. */
export interface FlagListing {
  readonly names: readonly string[];
  readonly more?: string;
}

function unknownFlag(token: string, specs: FlagSpecs, listed: FlagListing): UsageError {
  const name = token.replace(/^-+/, '').split('=')[0];
  const near = closest(name, Object.keys(specs));
  const hint = near ? `did you mean --${near}? ` : '';
  return new UsageError(`unknown flag ${token.split('=')[0]}: ${hint}the flags are ${known(listed.names)}${listed.more ? `, ${listed.more}` : ''}`);
}

function resolveName(token: string, specs: FlagSpecs): { name: string; negated: boolean; inline?: string } | undefined {
  if (/^-[A-Za-z]$/.test(token)) {
    const name = Object.keys(specs).find((key) => specs[key].short === token[1]);
    return name ? { name, negated: false } : undefined;
  }
  const match = /^--([A-Za-z0-9][A-Za-z0-9-]*)(?:=([\s\S]*))?$/.exec(token);
  if (!match) return undefined;
  const [, raw, inline] = match;
  if (Object.hasOwn(specs, raw)) return { name: raw, negated: false, ...(inline !== undefined ? { inline } : {}) };
  const positive = raw.replace(/^no-/, '');
  if (raw.startsWith('no-') && specs[positive]?.type === 'boolean' && inline === undefined) return { name: positive, negated: true };
  return undefined;
}

function booleanValue(name: string, inline: string | undefined, negated: boolean): boolean {
  if (inline === undefined) return !negated;
  if (inline === 'true') return true;
  if (inline === 'false') return false;
  throw new UsageError(`--${name} takes no value, or =true / =false, not ${JSON.stringify(inline)}`);
}

/**
 * Parses argv (without `node` and the script) against the flags given. `listed` are the flags an
 * unknown-flag error names (default: all), so a long tail of rarely used ones can be left to --help.
 */
export function parseArgs(argv: readonly string[], specs: FlagSpecs, listed: FlagListing = { names: Object.keys(specs) }): ParsedArgs {
  const positionals: string[] = [];
  const flags: Record<string, string | boolean | string[]> = {};
  for (let index = 0; index < argv.length; index += 1) {
    const token = argv[index];
    if (token === '--') {
      positionals.push(...argv.slice(index + 1));
      break;
    }
    if (!token.startsWith('-') || token === '-') {
      positionals.push(token);
      continue;
    }
    const resolved = resolveName(token, specs);
    if (!resolved) throw unknownFlag(token, specs, listed);
    const { name, negated, inline } = resolved;
    const spec = specs[name];
    if (spec.type === 'boolean') {
      flags[name] = booleanValue(name, inline, negated);
      continue;
    }
    let value = inline;
    if (value === undefined) {
      const next = argv[index + 1];
      if (next === undefined || (next.startsWith('--') && next.length > 2)) {
        throw new UsageError(`--${name} needs a value: --${name} ${spec.value ?? '<value>'}`);
      }
      value = next;
      index += 1;
    }
    if (spec.repeatable) flags[name] = [...((flags[name] as string[] | undefined) ?? []), value];
    else if (typeof flags[name] === 'string') throw new UsageError(`--${name} is given twice; give it once`);
    else flags[name] = value;
  }
  return parsed(positionals, flags, specs);
}

function parsed(positionals: string[], flags: Record<string, string | boolean | string[]>, specs: FlagSpecs): ParsedArgs {
  const declared = (name: string, type: FlagSpec['type']) => {
    // A command reading a flag it did not declare is a bug in the command, not the user's mistake.
    if (specs[name]?.type !== type) throw new Error(`flag --${name} is not declared as a ${type} flag`);
  };
  const string = (name: string) => {
    declared(name, 'string');
    const value = flags[name];
    return Array.isArray(value) ? value[value.length - 1] : (value as string | undefined);
  };
  return {
    positionals,
    flags,
    string,
    strings(name) {
      declared(name, 'string');
      const value = flags[name];
      return Array.isArray(value) ? value : typeof value === 'string' ? [value] : [];
    },
    boolean(name, fallback = false) {
      declared(name, 'boolean');
      const value = flags[name];
      return typeof value === 'boolean' ? value : fallback;
    },
    integer(name, min, max) {
      const text = string(name);
      if (text === undefined) return undefined;
      const value = /^-?\d+$/.test(text.trim()) ? Number(text) : Number.NaN;
      if (!Number.isSafeInteger(value) || value < min || value > max) {
        throw new UsageError(`--${name} ${text} is not allowed: give an integer from ${min} to ${max}`);
      }
      return value;
    },
  };
}

/** The flags as `--help` lists them, one per line, descriptions aligned. */
export function describeFlags(specs: FlagSpecs): string {
  const rows = Object.entries(specs).map(([name, spec]) => {
    const alias = spec.short ? `-${spec.short}, ` : '';
    const value = spec.type === 'string' ? ` ${spec.value ?? '<value>'}` : '';
    const shown = spec.type === 'boolean' && spec.negatable ? `--[no-]${name}` : `--${name}`;
    return [`${alias}${shown}${value}`, spec.description + (spec.repeatable ? ' (repeatable)' : '')];
  });
  const width = Math.max(0, ...rows.map(([left]) => left.length));
  return rows.map(([left, right]) => `  ${left.padEnd(width)}  ${right}`).join('\n');
}
