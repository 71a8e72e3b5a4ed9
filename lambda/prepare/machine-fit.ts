import type { HyperparameterValue } from '../shared/hyperparameters';
import { FLUX_TRAINING_DEFAULTS, servingFitProblem, trainingFitProblem, trainingVolumeProblem } from '../shared/instance-fit';
import { show } from './errors';
import type { ResolvedOptions, Source, Sourced } from './input';

/**
 * Whether a run's machines fit its model: the training instance for the run's FLUX settings, the
 * training volume, and a dedicated endpoint's instance type (the shared endpoint's is checked when
 * the stack is deployed). Found here, a run too big for its instance fails before any SageMaker call,
 * not with an out-of-memory error an hour into a job.
 */

type Values = Readonly<Record<string, HyperparameterValue | null>>;

function named(key: string, sourced: Sourced<unknown>): string {
  return `"${key}" = ${show(sourced.value)} (${sourced.source})`;
}

/** The hyperparameters that decide FLUX.1's GPU memory, as validated (the schema's defaults filled in). */
function fluxSettings(values: Values): { fp8Base: boolean; blocksToSwap: number | null } {
  const fp8Base = typeof values.fp8_base === 'boolean' ? values.fp8_base : FLUX_TRAINING_DEFAULTS.fp8Base;
  const blocksToSwap = typeof values.blocks_to_swap === 'number' ? values.blocks_to_swap : null;
  return { fp8Base, blocksToSwap };
}

/** Where a value comes from when the run itself gives it (not the deployment, nor a default standing in for it). */
const RUN_SOURCES: ReadonlySet<Source> = new Set<Source>(['execution input', 'train.json']);

/**
 * Every machine of the run too small for its model type, each named with where its value came from.
 * `runGivenOnly` (the CLI, offline): the deployment's machines are unknown there (the configuration
 * defaults stand in for them), so only the values the run gives are checked; Prepare checks them all.
 */
export function machineFitProblems(options: ResolvedOptions, values: Values, dedicated: boolean, runGivenOnly = false): string[] {
  const type = options.modelType.value;
  const { instanceType, volumeSizeGb } = options.training;
  const problems: Array<[string, Sourced<unknown>, string | undefined]> = [
    ['training.instanceType', instanceType, trainingFitProblem(type, instanceType.value, fluxSettings(values))],
    ['training.volumeSizeGb', volumeSizeGb, trainingVolumeProblem(type, volumeSizeGb.value)],
    ['endpoint.instanceType', options.endpoint.instanceType, dedicated ? servingFitProblem(type, options.endpoint.instanceType.value) : undefined],
  ];
  return problems
    .filter(([, sourced, problem]) => problem !== undefined && (!runGivenOnly || RUN_SOURCES.has(sourced.source)))
    .map(([key, sourced, problem]) => `${named(key, sourced)} does not fit ${type}: ${problem}`);
}
