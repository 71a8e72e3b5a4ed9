import { endpointName, executionName, fittedSlug, MAX_EXECUTION_NAME, MAX_SAGEMAKER_NAME, runName, slug } from '../../lambda/shared/names';

/** CreateTrainingJob's, CreateModel's, CreateEndpointConfig's and CreateEndpoint's name pattern. */
const SAGEMAKER_NAME = /^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$/;
const START = '2025-06-01T12:34:56.789Z';
const LONG = 'a-very-long-dataset-name-'.repeat(4); // 100 characters

describe('slug', () => {
  test.each([
    ['pokemon', 'pokemon'],
    ['Pokémon Cards!', 'pokemon-cards'],
    ['  --my__data--  ', 'my-data'],
    ['c++', 'c'],
    ['ポケモン', ''],
  ])('%j → %j', (text, expected) => {
    expect(slug(text)).toBe(expected);
  });

  test('NFC and NFD spellings of a name give the same slug', () => {
    expect(slug('pok\u00e9mon')).toBe(slug('poke\u0301mon'));
  });
});

describe('fittedSlug', () => {
  test('a name that is already a slug and fits is kept as it is', () => {
    expect(fittedSlug('pokemon-cards', 13)).toBe('pokemon-cards');
  });

  test('any other name gets a hash of itself: folders differing only in case, accents or punctuation stay apart', () => {
    const variants = ['pokemon', 'Pokemon', 'POKEMON', 'pokémon', 'poke_mon', 'poke-mon', 'poke mon', 'poke.mon', 'a b', 'a+b'];
    const fitted = variants.map((v) => fittedSlug(v, 40));
    expect(new Set(fitted).size).toBe(variants.length);
    expect(fittedSlug('Pokémon Cards', 40)).toMatch(/^pokemon-cards-[0-9a-f]{8}$/);
    // Control: their slugs alone collide.
    expect(new Set(variants.map(slug)).size).toBeLessThan(variants.length);
  });

  test('a slug that does not fit is cut to the limit and ends with a hash of the text', () => {
    const fitted = fittedSlug('Pokémon Cards', 12);
    expect(fitted).toMatch(/^pok-[0-9a-f]{8}$/);
    expect(fitted.length).toBeLessThanOrEqual(12);
  });

  test('never ends with "-", wherever the cut falls', () => {
    const text = 'ab-cd-ef-gh-ij-kl-mn-op-qr-st-uv-wx-yz';
    const cuts = Array.from({ length: 30 }, (_, i) => i + 10);
    // Control: a plain cut at these limits does end with a hyphen for some of them.
    expect(cuts.some((max) => slug(text).slice(0, max - 9).endsWith('-'))).toBe(true);
    for (const max of cuts) {
      const fitted = fittedSlug(text, max);
      expect(fitted.length).toBeLessThanOrEqual(max);
      expect(fitted).toMatch(/^[a-z0-9](-?[a-z0-9])*$/);
    }
  });

  test('a name in another script gets a hash, so two such names stay distinct', () => {
    const pokemon = fittedSlug('ポケモン', 40);
    const pikachu = fittedSlug('ピカチュウ', 40);
    expect(pokemon).toMatch(/^dataset-[0-9a-f]{8}$/);
    expect(pikachu).toMatch(/^dataset-[0-9a-f]{8}$/);
    expect(pokemon).not.toBe(pikachu);
    expect(fittedSlug('ポケモン', 40, 'run')).toMatch(/^run-[0-9a-f]{8}$/);
  });

  test('a name mixing scripts gets a hash too: its Latin part alone would name two datasets alike', () => {
    const first = fittedSlug('データa', 40);
    const second = fittedSlug('写真a', 40);
    expect(first).toMatch(/^a-[0-9a-f]{8}$/);
    expect(first).not.toBe(second);
  });

  test('two long names sharing a beginning stay distinct', () => {
    const first = fittedSlug(`${LONG}first`, 40);
    const second = fittedSlug(`${LONG}second`, 40);
    expect(first.slice(0, 31)).toBe(second.slice(0, 31));
    expect(first).not.toBe(second);
  });
});

describe('executionName', () => {
  test('fits Step Functions’ limit, is deterministic and changes with the upload', () => {
    const name = executionName(`${LONG}${LONG}`, 'seq-1');
    expect(name.length).toBeLessThanOrEqual(MAX_EXECUTION_NAME);
    expect(name).toMatch(/^[a-z0-9](-?[a-z0-9])*$/);
    expect(executionName(`${LONG}${LONG}`, 'seq-1')).toBe(name);
    expect(executionName(`${LONG}${LONG}`, 'seq-2')).not.toBe(name);
  });
});

describe('runName', () => {
  test('is <prefix>-<name>-<yyyymmddhhmmss>-<hash>', () => {
    expect(runName('lora', 'Pokémon', START, 'pokemon-0123456789abcdef')).toMatch(/^lora-pokemon-20250601123456-[0-9a-f]{6}$/);
  });

  test.each([
    ['a short name', 'pokemon'],
    ['a long name', `${LONG}${LONG}`],
    ['a name in another script', 'ポケモン'],
    ['a name of separators only', '--__--'],
  ])('%s fits SageMaker’s limit and pattern', (_, name) => {
    const run = runName('lora-pipeline', name, START, 'execution-1');
    expect(run.length).toBeLessThanOrEqual(MAX_SAGEMAKER_NAME);
    expect(run).toMatch(SAGEMAKER_NAME);
  });

  test('control: the pattern refuses what SageMaker refuses', () => {
    for (const bad of ['lora-', '-lora', 'lora_pokemon', 'lora.pokemon', 'a'.repeat(64)]) expect(bad).not.toMatch(SAGEMAKER_NAME);
  });

  test('is the same each time for one execution, and differs for another started in the same second', () => {
    const run = runName('lora', 'pokemon', START, 'pokemon-0123456789abcdef');
    expect(runName('lora', 'pokemon', START, 'pokemon-0123456789abcdef')).toBe(run);
    expect(runName('lora', 'pokemon', START, 'pokemon-fedcba9876543210')).not.toBe(run);
  });

  test('an invalid start time throws', () => {
    expect(() => runName('lora', 'pokemon', 'not a time', 'execution-1')).toThrow('Not a timestamp: "not a time"');
  });
});

describe('endpointName', () => {
  test('is the same for every run of a dataset', () => {
    expect(endpointName('lora', 'pokemon')).toBe('lora-pokemon');
    expect(endpointName('lora', 'Pokémon')).toBe(endpointName('lora', 'Pokémon'));
    expect(endpointName('lora', 'Pokémon')).not.toBe(endpointName('lora', 'pokemon'));
  });

  test('a long name fits SageMaker’s limit and pattern, and stays distinct from one sharing its beginning', () => {
    const first = endpointName('lora-pipeline', `${LONG}first`);
    const second = endpointName('lora-pipeline', `${LONG}second`);
    for (const name of [first, second]) {
      expect(name.length).toBeLessThanOrEqual(MAX_SAGEMAKER_NAME);
      expect(name).toMatch(SAGEMAKER_NAME);
    }
    expect(first).not.toBe(second);
  });
});
