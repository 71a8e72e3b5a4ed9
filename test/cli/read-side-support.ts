import type { RunStatus } from '../../lambda/status/status';
import { cli, type FakeIo, fakeIo } from './fake-io';

/**
 * What the read-side command tests (status, runs, loras, generate, cleanup) share: a captured
 * terminal, the CLI run through its real frame (cli/main.ts) with the stack's outputs given as
 * env vars, and RunStatus answers as the status function gives them.
 */

export const STATE_MACHINE_ARN = 'arn:aws:states:eu-west-1:123456789012:stateMachine:LoraPipelineWorkflow';
export const executionArn = (name: string) => `arn:aws:states:eu-west-1:123456789012:execution:LoraPipelineWorkflow:${name}`;

export type CapturedIo = FakeIo;

/** fake-io.ts's terminal on the read-side tests' clock: output kept, `answers` given in turn. */
export function capturedIo(clock: { now: number } = { now: Date.parse('2025-01-01T12:12:05Z') }, answers: string[] = []): CapturedIo {
  return fakeIo({ clock, answers });
}

/** Env vars giving the outputs (so no CloudFormation call is made), credentials, and a region. */
export function cliEnv(outputs: Record<string, string>, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return {
    AWS_REGION: 'eu-west-1',
    AWS_ACCESS_KEY_ID: 'testing',
    AWS_SECRET_ACCESS_KEY: 'testing',
    ...Object.fromEntries(Object.entries(outputs).map(([flag, value]) => [`LORA_PIPELINE_${flag.toUpperCase().replace(/-/g, '_')}`, value])),
    ...extra,
  };
}

/** Runs `lora-pipeline <argv>` through the real frame; returns the exit code and the captured terminal. */
export async function runCli(argv: string[], env: NodeJS.ProcessEnv, io: CapturedIo = capturedIo(), signal?: AbortSignal): Promise<{ code: number; io: CapturedIo }> {
  const { code } = await cli(argv, env, { io, clientOverrides: { maxAttempts: 1, credentials: { accessKeyId: 'testing', secretAccessKey: 'testing' } }, ...(signal !== undefined ? { signal } : {}) });
  return { code, io };
}

/** A run as the status function answers: a dedicated run training, unless `overrides` say otherwise. */
export function runFixture(overrides: Partial<RunStatus> = {}): RunStatus {
  return {
    executionArn: executionArn('pokemon-0a1b2c'),
    executionName: 'pokemon-0a1b2c',
    dataset: 'pokemon',
    run: 'lora-pokemon-20250101120000-abc123',
    phase: 'TRAINING',
    status: 'RUNNING',
    startedAt: '2025-01-01T12:00:00.000Z',
    currentState: 'Train LoRA',
    training: { jobName: 'lora-pokemon-20250101120000-abc123', status: 'InProgress', secondaryStatus: 'Training' },
    servingMode: 'dedicated',
    endpoint: { name: 'lora-pokemon', status: 'InService', endpointConfigName: 'lora-pokemon-20241201090000-fff111', servesThisRun: false },
    ...overrides,
  };
}

/** The Lambda Invoke answer carrying `body` as its JSON payload (and FunctionError when given). */
export function invokeAnswer(body: unknown, functionError?: string): Record<string, unknown> {
  return { StatusCode: 200, Payload: new TextEncoder().encode(JSON.stringify(body)), ...(functionError !== undefined ? { FunctionError: functionError } : {}) };
}

/** The payload a mocked Invoke was sent, parsed. */
export function sentPayload(input: { Payload?: unknown }): unknown {
  return JSON.parse(Buffer.from(input.Payload as Uint8Array).toString('utf8'));
}
