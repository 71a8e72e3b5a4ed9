import { z } from 'zod';
import type { PrepareSettings } from '../shared/contract';
import { GPU_INSTANCE_TYPE, HF_REPO_ID, isS3ModelUri, MAX_TRAINING_SECONDS } from '../shared/models';
import { SAGEMAKER_NAME } from '../shared/names';

/**
 * The function's deploy-time settings (`SETTINGS`, JSON), checked once at cold start: the stack
 * writes them, so a bad value is a deployment bug, and failing every invocation with what is wrong
 * is clearer than a run failing half-way on an undefined field.
 */

const positiveInteger = (max: number) => z.number().int().min(1).max(max);
const gpuInstanceType = z.string().regex(GPU_INSTANCE_TYPE);
// SageMaker's endpoint and inference component name rule.
const endpointName = z.string().regex(SAGEMAKER_NAME);

const settingsSchema = z.strictObject({
  datasetsBucket: z.string().regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/),
  // Empty (the bucket's root) or a prefix ending in '/': dataset folders are one segment below it.
  datasetPrefix: z.string().regex(/^([^/]+\/)*$/),
  triggerFileName: z.string().min(1).regex(/^[^/]+$/),
  settleSeconds: z.number().int().min(0).max(3600),
  maxSettleWaitSeconds: z.number().int().min(0),
  // A run name keeps 40 − prefix length characters for the run's own name (names.ts runName), and
  // at least the 8 of a shortened name's hash must fit.
  namePrefix: z.string().regex(/^[a-z0-9](-?[a-z0-9])*$/).max(32),
  modelType: z.enum(['sd15', 'sdxl', 'flux1']),
  baseModel: z.string().refine((v) => HF_REPO_ID.test(v) || isS3ModelUri(v), 'a Hugging Face repo id or an s3:// model URI'),
  readableS3BaseModel: z.string().refine(isS3ModelUri, 'an s3:// model URI').optional(),
  // A Secrets Manager secret's name or ARN (never the token): the containers read it themselves.
  huggingFaceTokenSecretId: z.string().regex(/^(arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:)?[A-Za-z0-9/_+=.@-]{1,512}$/).optional(),
  training: z.strictObject({
    instanceType: gpuInstanceType,
    spot: z.boolean(),
    maxRuntimeSeconds: positiveInteger(MAX_TRAINING_SECONDS),
    maxWaitSeconds: positiveInteger(MAX_TRAINING_SECONDS),
    volumeSizeGb: positiveInteger(16384),
    // caption_missing for a run that does not set it; absent: the model type's schema default.
    captionMissing: z.boolean().optional(),
  }),
  endpoint: z.strictObject({
    mode: z.enum(['shared', 'dedicated']),
    shared: z.strictObject({ endpointName: endpointName, inferenceComponentName: endpointName }).optional(),
    instanceType: gpuInstanceType,
    instanceCount: positiveInteger(20),
    startupHealthCheckTimeoutSeconds: z.number().int().min(60).max(3600),
    modelDataDownloadTimeoutSeconds: z.number().int().min(60).max(3600),
    loraScale: z.number().min(0).max(2),
  }),
  keyArn: z.string().regex(/^arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key\/[A-Za-z0-9-]+$/),
  checkpointExpirationDays: positiveInteger(3650),
  pipeline: z.string().min(1).max(256),
}).superRefine((settings, context) => {
  // The shared endpoint's names exist exactly when the deployment serves runs on it.
  const { mode, shared } = settings.endpoint;
  if (mode === 'shared' && shared === undefined) context.addIssue({ code: 'custom', path: ['endpoint', 'shared'], message: 'required in shared mode' });
  if (mode === 'dedicated' && shared !== undefined) context.addIssue({ code: 'custom', path: ['endpoint', 'shared'], message: 'must be absent in dedicated mode' });
});

/** Parses and checks `SETTINGS`; throws an Error naming every bad field. */
export function parseSettings(text: string | undefined): PrepareSettings {
  if (text === undefined || text.trim() === '') {
    throw new Error('The SETTINGS environment variable is not set: the stack sets it to the JSON of PrepareSettings (lambda/shared/contract.ts).');
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new Error(`The SETTINGS environment variable is not valid JSON: ${(error as Error).message}`, { cause: error });
  }
  const result = settingsSchema.safeParse(json);
  if (!result.success) {
    const problems = result.error.issues.map((issue) => `${issue.path.join('.') || '(root)'}: ${issue.message}`);
    throw new Error(`The SETTINGS environment variable is not valid PrepareSettings: ${problems.join('; ')}`);
  }
  // Returned as is: the contract type checks that the schema covers every field it declares.
  return result.data;
}
