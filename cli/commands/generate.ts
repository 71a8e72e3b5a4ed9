import { access, writeFile } from 'node:fs/promises';
import { fluxVariantOfHubId } from '../../lambda/shared/flux-files';
import { LORA_NAME, loraRef } from '../../lambda/shared/lora-name';
import { awsCall } from '../aws-errors';
import { type CliContext, type Command, EXIT, type ParsedArgs, UsageError } from '../command';
import { statusSource } from '../follow';
import { json } from '../format';
import { EndpointRefused, type GenerateParameters, type GenerateTarget, generate } from '../generate-request';
import { latestRunOf } from '../run-target';

const USAGE = `lora-pipeline generate --lora <name>[@<version>] --prompt "<text>" [--out <file.png>] [--seed <n>]
                        [--steps <n>] [--width <px>] [--height <px>] [--negative "<text>"] [--scale <x>]
                        [--guidance <x>] [--endpoint <name>] [--force] [--json]

Generates one image with a trained LoRA and writes it to a file (default <lora>-<seed>.png; a .jpg
or .jpeg --out asks for JPEG). On the shared endpoint (endpoint.mode=shared), --lora names the
LoRA from the registry: <name> is its current version, <name>@<version> one version. With a
dedicated endpoint, give --endpoint <name>, or --lora <dataset> to use the endpoint of the
dataset's latest run. Prints the seed and the LoRA versions the endpoint used.

The server checks each field (containers/inference/README.md): steps 1-100, width and height
multiples of 8 (256-1024 for SD 1.5, 512-1536 for SDXL), scale 0-2, guidance 0-20. FLUX.1 differs:
steps 1-50 (default 4 for schnell, 28 for dev), sides multiples of 16 (256-1536), --guidance is
FLUX.1-dev's distilled guidance (default 3.5; schnell takes none), and there is no --negative.

Exit status: 0 when the image is written; 1 when the endpoint refused or failed the request (its
message is printed); 2 on a usage error; 3 on an AWS or configuration error.`;

/** "--scale 0.8" as a number in [min, max]. */
function decimal(args: ParsedArgs, name: string, min: number, max: number): number | undefined {
  const text = args.string(name);
  if (text === undefined) return undefined;
  const value = /^\d+(\.\d+)?$/.test(text.trim()) ? Number(text) : Number.NaN;
  if (!(value >= min && value <= max)) throw new UsageError(`--${name} ${text} is not allowed: give a number from ${min} to ${max}`);
  return value;
}

/** `name` or `name@version`, as the shared server names a LoRA. */
export function parseLora(text: string): { name: string; version?: number } {
  const match = /^([^@]+)(?:@(\d+))?$/.exec(text);
  if (match === null || !LORA_NAME.test(match[1]) || (match[2] !== undefined && Number(match[2]) < 1)) {
    throw new UsageError(`--lora ${text} is not a LoRA: give <name> or <name>@<version>, a name being a letter or digit then up to 62 letters, digits, '_' or '-', a version a positive integer`);
  }
  return { name: match[1], ...(match[2] !== undefined ? { version: Number(match[2]) } : {}) };
}

function parameters(args: ParsedArgs, out: string | undefined): GenerateParameters {
  const prompt = args.string('prompt');
  if (prompt === undefined || prompt.trim() === '') throw new UsageError('--prompt "<text>" is required');
  return {
    prompt,
    negativePrompt: args.string('negative'),
    seed: args.integer('seed', 0, 4_294_967_295),
    steps: args.integer('steps', 1, 100),
    width: args.integer('width', 8, 4096),
    height: args.integer('height', 8, 4096),
    guidanceScale: decimal(args, 'guidance', 0, 20),
    loraScale: decimal(args, 'scale', 0, 2),
    outputFormat: out !== undefined && /\.jpe?g$/i.test(out) ? 'jpeg' : 'png',
  };
}

/** A stack output, when the stack (or its flag) says it; unknown (the server then decides) when it cannot be read. */
async function sharedSetting(ctx: CliContext, key: 'ModelType' | 'BaseModel'): Promise<string | undefined> {
  try {
    return (await ctx.outputs(key)).find(key);
  } catch {
    return undefined;
  }
}

/**
 * What the shared FLUX.1 server would refuse, said before the endpoint is paid for: a negative prompt
 * (FLUX.1 is guidance-distilled: no classifier-free guidance), and guidance for FLUX.1-schnell (no
 * guidance embedder). An S3 base model's variant is not known here: the server decides.
 */
async function refuseForSharedFlux(args: ParsedArgs, ctx: CliContext): Promise<void> {
  const guidance = decimal(args, 'guidance', 0, 20);
  if (args.string('negative') === undefined && !guidance) return;
  if ((await sharedSetting(ctx, 'ModelType')) !== 'flux1') return;
  if (args.string('negative') !== undefined) {
    throw new UsageError('--negative does not apply to FLUX.1 (guidance-distilled: no classifier-free guidance), which the shared endpoint serves: leave it out');
  }
  const baseModel = await sharedSetting(ctx, 'BaseModel');
  if (baseModel !== undefined && fluxVariantOfHubId(baseModel) === 'schnell') {
    throw new UsageError(`--guidance does not apply to FLUX.1-schnell (it takes no guidance), which the shared endpoint serves (${baseModel}): leave it out or give 0`);
  }
}

/** The endpoint the request goes to: --endpoint, else the shared one, else the dataset's dedicated one. */
async function targetOf(args: ParsedArgs, ctx: CliContext, lora: { name: string; version?: number } | undefined): Promise<GenerateTarget | string> {
  const endpoint = args.string('endpoint');
  if (endpoint !== undefined) {
    if (lora?.version !== undefined) throw new UsageError('a dedicated endpoint serves the one LoRA it was deployed with: drop @<version>, or leave out --endpoint to use the shared endpoint');
    return { mode: 'dedicated', endpointName: endpoint };
  }
  if (lora === undefined) throw new UsageError('--lora <name>[@<version>] is required (or --endpoint <name> for a dedicated endpoint)');
  const outputs = await ctx.outputs('SharedEndpointName', 'SharedInferenceComponentName');
  const shared = outputs.find('SharedEndpointName');
  if (shared !== undefined) {
    await refuseForSharedFlux(args, ctx);
    const ref = lora.version !== undefined ? loraRef(lora.name, lora.version) : lora.name;
    return { mode: 'shared', endpointName: shared, inferenceComponentName: outputs.get('SharedInferenceComponentName'), lora: ref };
  }
  if (lora.version !== undefined) throw new UsageError('this deployment has no shared endpoint (endpoint.mode=dedicated): a dataset\'s endpoint serves one LoRA, drop @<version>');
  const source = await statusSource(ctx);
  const run = await awsCall('Asking the status function', () => latestRunOf(source, lora.name));
  if (run?.endpoint === undefined || run.servingMode !== 'dedicated') {
    return `No dedicated endpoint is known for ${lora.name}: none of the latest runs of a dataset ${lora.name} has one. Give --endpoint <name> (lora-pipeline runs lists them).`;
  }
  return { mode: 'dedicated', endpointName: run.endpoint.name };
}

async function exists(file: string): Promise<boolean> {
  return access(file).then(
    () => true,
    () => false,
  );
}

function summary(file: string, image: { seed?: number; loras?: ReadonlyArray<{ name: string; version: number; scale?: number }>; timings?: Record<string, number> }): string {
  const used = image.loras?.map((lora) => `${loraRef(lora.name, lora.version)}${lora.scale !== undefined ? ` (scale ${lora.scale})` : ''}`).join(', ');
  const parts = [`Wrote ${file}`, image.seed !== undefined ? `seed ${image.seed}` : undefined, used !== undefined ? `LoRA ${used || 'none (base model)'}` : undefined];
  const ms = image.timings?.generate_ms;
  if (ms !== undefined) parts.push(`${(ms / 1000).toFixed(1)} s to generate`);
  return parts.filter((part) => part !== undefined).join(', ');
}

export const command: Command = {
  name: 'generate',
  summary: 'one image from a LoRA (shared or dedicated endpoint), written to a PNG',
  usage: USAGE,
  flags: {
    lora: { type: 'string', value: '<name>[@<version>]', description: 'the LoRA (shared endpoint), or the dataset whose dedicated endpoint to use' },
    prompt: { type: 'string', short: 'p', value: '"<text>"', description: 'what to draw (required)' },
    out: { type: 'string', short: 'o', value: '<file>', description: 'the image file (default <lora>-<seed>.png; .jpg/.jpeg for JPEG)' },
    seed: { type: 'string', value: '<n>', description: 'the seed, 0-4294967295 (default: random, printed)' },
    steps: { type: 'string', value: '<n>', description: 'denoising steps, 1-100 (server default 25; FLUX.1 1-50, default 4 schnell, 28 dev)' },
    width: { type: 'string', value: '<px>', description: 'image width, a multiple of 8 (FLUX.1: 16)' },
    height: { type: 'string', value: '<px>', description: 'image height, a multiple of 8 (FLUX.1: 16)' },
    negative: { type: 'string', value: '"<text>"', description: 'the negative prompt (not for FLUX.1)' },
    scale: { type: 'string', value: '<x>', description: 'the LoRA strength, 0-2' },
    guidance: { type: 'string', value: '<x>', description: 'the guidance scale, 0-20 (server default 7.5; FLUX.1-dev 3.5; not for schnell)' },
    endpoint: { type: 'string', value: '<name>', description: 'a dedicated endpoint to invoke instead of the shared one' },
    force: { type: 'boolean', description: 'overwrite --out if it exists' },
    json: { type: 'boolean', description: 'print the file, seed, LoRA versions and timings as JSON' },
  },
  async run(args, ctx) {
    if (args.positionals.length > 0) throw new UsageError(`generate takes no positional arguments (got ${args.positionals.join(' ')}): quote the prompt, --prompt "…"`);
    const loraText = args.string('lora');
    const lora = loraText !== undefined ? parseLora(loraText) : undefined;
    const params = parameters(args, args.string('out'));
    const out = args.string('out');
    // Refused before the endpoint is paid for and waited on; the exclusive write below still guards a race.
    if (out !== undefined && !args.boolean('force') && (await exists(out))) {
      ctx.io.err(`${out} exists: give another --out, or --force to overwrite it\n`);
      return EXIT.failed;
    }
    const target = await targetOf(args, ctx, lora);
    if (typeof target === 'string') {
      ctx.io.err(`${target}\n`);
      return EXIT.failed;
    }
    let image;
    try {
      image = await awsCall(`Invoking the endpoint ${target.endpointName}`, () => generate(ctx.clients.sagemakerRuntime, target, params));
    } catch (error) {
      if (!(error instanceof EndpointRefused)) throw error;
      const field = error.field !== undefined ? ` (field ${error.field})` : '';
      ctx.io.err(`The endpoint ${target.endpointName} answered ${error.status ?? 'an error'}${field}: ${error.message}\n`);
      return EXIT.failed;
    }
    const extension = params.outputFormat === 'jpeg' ? 'jpg' : 'png';
    const file = out ?? `${lora?.name ?? target.endpointName}-${image.seed ?? params.seed ?? 'image'}.${extension}`;
    try {
      await writeFile(file, image.image, { flag: args.boolean('force') ? 'w' : 'wx' });
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      ctx.io.err(code === 'EEXIST' ? `${file} exists: give another --out, or --force to overwrite it\n` : `Writing ${file} failed: ${(error as Error).message}\n`);
      return EXIT.failed;
    }
    const result = { file, seed: image.seed ?? null, loras: image.loras ?? null, timings: image.timings ?? null, endpoint: target.endpointName };
    ctx.io.out(`${args.boolean('json') ? json(result) : summary(file, image)}\n`);
    return EXIT.ok;
  },
};
