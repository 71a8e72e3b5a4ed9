import { z } from 'zod';
import type { PreparedRun, RegistryEvent } from '../shared/contract';
import { LORA_NAME } from '../shared/lora-name';
import { preparedRun } from '../shared/run-info';
import { invalidRegistryEvent } from './errors';

/**
 * The registry function's event, checked: the workflow builds it, so a bad one is a definition bug
 * (or an operator's typo in a `retire` request), answered with what is wrong and what is expected.
 */

const name = z.string().regex(LORA_NAME, 'a LoRA name: 1 to 63 letters, digits, "_" and "-", starting with a letter or digit');
const version = z.number().int().min(1, 'a version number from 1');
const MAX_REASON = 1000;

const schema = z.discriminatedUnion('action', [
  z.object({
    action: z.literal('register'),
    run: z.record(z.string(), z.unknown()),
    training: z.looseObject({ ModelArtifacts: z.looseObject({ S3ModelArtifacts: z.string() }) }),
    execution: z.object({ name: z.string().min(1), startTime: z.string().min(1), arn: z.string().regex(/^arn:aws[a-z-]*:states:/, 'an execution ARN') }),
  }),
  z.object({ action: z.literal('promote'), name, version }),
  z.object({ action: z.literal('reject'), name, version, reason: z.string() }),
  z.object({ action: z.literal('retire'), name, version }),
]);

const USAGE =
  'Expected {"action": "register", "run", "training", "execution"}, {"action": "promote" | "retire", "name", "version"} ' +
  'or {"action": "reject", "name", "version", "reason"}.';

export function parseRegistryEvent(event: unknown): RegistryEvent {
  const result = schema.safeParse(event);
  if (!result.success) {
    const problems = result.error.issues.map((issue) => `${issue.path.join('.') || '(event)'}: ${issue.message}`);
    throw invalidRegistryEvent(`The registry request is invalid (${problems.join('; ')}). ${USAGE}`);
  }
  const parsed = result.data;
  if (parsed.action === 'reject') return { ...parsed, reason: parsed.reason.slice(0, MAX_REASON) };
  if (parsed.action !== 'register') return parsed;
  const run: PreparedRun | undefined = preparedRun(parsed.run);
  if (run === undefined) throw invalidRegistryEvent(`"run" is not a prepared run (Prepare's settled answer). ${USAGE}`);
  if (run.serving.mode !== 'shared') {
    throw invalidRegistryEvent(`Run ${run.run} is served by a dedicated endpoint (serving.mode ${JSON.stringify(run.serving.mode)}): only shared runs register a LoRA version.`);
  }
  if (!LORA_NAME.test(run.lora?.name ?? '')) throw invalidRegistryEvent(`Run ${run.run} has no valid lora.name (${JSON.stringify(run.lora?.name)}).`);
  return { action: 'register', run, training: parsed.training, execution: parsed.execution };
}
