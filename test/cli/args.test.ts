import { describeFlags, type FlagSpecs, parseArgs } from '../../cli/args';
import { UsageError } from '../../cli/command';

const SPECS: FlagSpecs = {
  name: { type: 'string', value: '<name>', description: 'the name' },
  lora: { type: 'string', repeatable: true, description: 'a LoRA' },
  force: { type: 'boolean', description: 'force it' },
  follow: { type: 'boolean', negatable: true, description: 'follow the run' },
  count: { type: 'string', description: 'how many' },
  help: { type: 'boolean', short: 'h', description: 'help' },
};

function usageError(run: () => unknown): string {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(UsageError);
    expect((error as UsageError).exitCode).toBe(2);
    return (error as Error).message;
  }
  throw new Error('expected a UsageError');
}

describe('parseArgs', () => {
  test('positionals, --flag value, --flag=value, booleans, short aliases, in any order', () => {
    const args = parseArgs(['data', '--name', 'pokemon', '--force', 'more', '--count=3', '-h'], SPECS);
    expect(args.positionals).toEqual(['data', 'more']);
    expect(args.string('name')).toBe('pokemon');
    expect(args.integer('count', 1, 5)).toBe(3);
    expect(args.boolean('force')).toBe(true);
    expect(args.boolean('help')).toBe(true);
  });

  test('flags not given: undefined strings, booleans at their fallback', () => {
    const args = parseArgs([], SPECS);
    expect(args.string('name')).toBeUndefined();
    expect(args.strings('lora')).toEqual([]);
    expect(args.boolean('force')).toBe(false);
    expect(args.boolean('follow', true)).toBe(true);
    expect(args.integer('count', 1, 5)).toBeUndefined();
  });

  test('--no-<flag> turns a boolean off; =true / =false are accepted, other values are not', () => {
    expect(parseArgs(['--no-follow'], SPECS).boolean('follow', true)).toBe(false);
    expect(parseArgs(['--follow=false'], SPECS).boolean('follow', true)).toBe(false);
    expect(parseArgs(['--force=true'], SPECS).boolean('force')).toBe(true);
    expect(usageError(() => parseArgs(['--force=yes'], SPECS))).toBe('--force takes no value, or =true / =false, not "yes"');
    // --no- applies to booleans only.
    expect(usageError(() => parseArgs(['--no-name'], SPECS))).toMatch(/^unknown flag --no-name/);
  });

  test('an unknown flag names the known ones, and the likely one', () => {
    expect(usageError(() => parseArgs(['--nmae', 'x'], SPECS))).toBe(
      'unknown flag --nmae: did you mean --name? the flags are --name, --lora, --force, --follow, --count, --help',
    );
    expect(usageError(() => parseArgs(['--zzzzzz=1'], SPECS, { names: ['name'], more: 'and others' }))).toBe('unknown flag --zzzzzz: the flags are --name, and others');
    expect(usageError(() => parseArgs(['-x'], SPECS))).toMatch(/^unknown flag -x: /);
  });

  test('a string flag needs a value; a following flag is not taken for one, a negative number is', () => {
    expect(usageError(() => parseArgs(['--name'], SPECS))).toBe('--name needs a value: --name <name>');
    expect(usageError(() => parseArgs(['--name', '--force'], SPECS))).toBe('--name needs a value: --name <name>');
    expect(parseArgs(['--count', '-1'], SPECS).string('count')).toBe('-1');
    expect(parseArgs(['--name='], SPECS).string('name')).toBe('');
  });

  test('repeatable flags keep every value; others may be given once', () => {
    expect(parseArgs(['--lora', 'a', '--lora=b'], SPECS).strings('lora')).toEqual(['a', 'b']);
    expect(usageError(() => parseArgs(['--name', 'a', '--name', 'b'], SPECS))).toBe('--name is given twice; give it once');
  });

  test('"--" ends the flags: what follows is positional, even if it looks like a flag', () => {
    const args = parseArgs(['--force', '--', '--name', '-h'], SPECS);
    expect(args.positionals).toEqual(['--name', '-h']);
    expect(args.string('name')).toBeUndefined();
    expect(parseArgs(['-'], SPECS).positionals).toEqual(['-']);
  });

  test('integer: in range accepted, out of range or not a number refused with the bounds', () => {
    expect(parseArgs(['--count', '5'], SPECS).integer('count', 1, 5)).toBe(5);
    expect(usageError(() => parseArgs(['--count', '6'], SPECS).integer('count', 1, 5))).toBe('--count 6 is not allowed: give an integer from 1 to 5');
    expect(usageError(() => parseArgs(['--count', '2.5'], SPECS).integer('count', 1, 5))).toMatch(/^--count 2.5 is not allowed/);
  });

  test('reading an undeclared flag is a bug in the command, not a usage error', () => {
    const args = parseArgs([], SPECS);
    expect(() => args.string('nope')).toThrow('flag --nope is not declared as a string flag');
    expect(() => args.boolean('name')).toThrow('flag --name is not declared as a boolean flag');
  });

  test('describeFlags aligns descriptions and shows aliases, values, negatable and repeatable flags', () => {
    expect(describeFlags(SPECS).split('\n')).toEqual([
      '  --name <name>    the name',
      '  --lora <value>   a LoRA (repeatable)',
      '  --force          force it',
      '  --[no-]follow    follow the run',
      '  --count <value>  how many',
      '  -h, --help       help',
    ]);
  });
});
