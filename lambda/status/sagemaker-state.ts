import { DescribeEndpointCommand, DescribeTrainingJobCommand, type SageMakerClient } from '@aws-sdk/client-sagemaker';
import type { PreparedRun } from '../shared/contract';
import { log } from '../shared/log';
import { summarizeTraining, type TrainingTransition } from '../shared/training-summary';

/**
 * A prepared run's training job and endpoint as SageMaker describes them now. A resource that
 * cannot be read is answered as `Unknown` with why: the execution's own status still stands.
 */

export interface TrainingStatus {
  readonly jobName: string;
  /** TrainingJobStatus, or `NotStarted` before the job exists, or `Unknown` when it could not be read. */
  readonly status: string;
  readonly secondaryStatus?: string;
  readonly transitions?: TrainingTransition[];
  readonly trainingSeconds?: number;
  readonly billableSeconds?: number;
  readonly spotSavingsPercent?: number;
  readonly modelArtifact?: string;
  readonly failureReason?: string;
  readonly logsUrl?: string;
  /** Why the job could not be read (status `Unknown`). */
  readonly error?: string;
}

export interface EndpointStatus {
  readonly name: string;
  /** EndpointStatus, or `NotCreated`, or `Unknown` when it could not be read. */
  readonly status: string;
  readonly failureReason?: string;
  readonly endpointConfigName?: string;
  /**
   * The endpoint is shared by a dataset's runs: whether it is on this run's endpoint config. False
   * for a run still training (the endpoint serves an earlier run) or one whose update was rolled back.
   */
  readonly servesThisRun?: boolean;
  /** Shared runs: the inference component a request names. */
  readonly inferenceComponentName?: string;
  readonly error?: string;
}

function errorText(error: unknown): { name: string; message: string } {
  return error instanceof Error ? { name: error.name, message: error.message } : { name: 'Error', message: String(error) };
}

/** SageMaker answers a Describe of a missing resource with a ValidationException. */
function isNotFound(error: unknown): boolean {
  const { name, message } = errorText(error);
  return name === 'ResourceNotFound' || (name === 'ValidationException' && /not found|could not find|does not exist/i.test(message));
}

export async function trainingStatus(sagemaker: SageMakerClient, run: PreparedRun): Promise<TrainingStatus> {
  const jobName = run.training.jobName;
  try {
    const job = summarizeTraining(await sagemaker.send(new DescribeTrainingJobCommand({ TrainingJobName: jobName })));
    return {
      jobName,
      status: job.status ?? 'Unknown',
      secondaryStatus: job.secondaryStatus,
      transitions: job.transitions,
      trainingSeconds: job.trainingSeconds,
      billableSeconds: job.billableSeconds,
      spotSavingsPercent: job.spotSavingsPercent,
      modelArtifact: job.modelArtifact,
      failureReason: job.failureReason,
      logsUrl: job.logsUrl,
    };
  } catch (error) {
    if (isNotFound(error)) return { jobName, status: 'NotStarted' };
    // The execution's own status is still worth answering with; say what could not be read.
    const { name, message } = errorText(error);
    log('WARN', 'Training job not readable', { jobName, error: name });
    return { jobName, status: 'Unknown', error: `${name}: ${message}` };
  }
}

export async function endpointStatus(sagemaker: SageMakerClient, run: PreparedRun): Promise<EndpointStatus> {
  const name = run.serving.endpointName;
  try {
    const endpoint = await sagemaker.send(new DescribeEndpointCommand({ EndpointName: name }));
    // The shared endpoint serves every version; whether it serves this one is the LoRA's status.
    const mine =
      run.serving.mode === 'dedicated'
        ? { servesThisRun: endpoint.EndpointConfigName === run.serving.endpointConfigName }
        : { inferenceComponentName: run.serving.inferenceComponentName };
    return {
      name,
      status: endpoint.EndpointStatus ?? 'Unknown',
      failureReason: endpoint.FailureReason,
      endpointConfigName: endpoint.EndpointConfigName,
      ...mine,
    };
  } catch (error) {
    if (isNotFound(error)) return { name, status: 'NotCreated' };
    const { name: errorName, message } = errorText(error);
    log('WARN', 'Endpoint not readable', { endpointName: name, error: errorName });
    return { name, status: 'Unknown', error: `${errorName}: ${message}` };
  }
}
