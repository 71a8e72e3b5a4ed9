import { Duration } from 'aws-cdk-lib';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import type { Construct } from 'constructs';
import { SAMPLES_ARCHIVE_INVALID, STATES } from '../../lambda/shared/contract';
import { invokeFunction } from './tasks';

/** Transient S3 or Lambda errors: a few tries with backoff (about a minute in all), every copy being idempotent. */
export const SAMPLES_RETRY = { interval: Duration.seconds(5), backoffRate: 2, maxAttempts: 3, jitterStrategy: sfn.JitterType.FULL } as const;

/** The run's dataset folder: the datasets bucket and `<datasetPrefix><folder>/`, as Prepare resolved it. */
export interface DatasetFolderRef {
  readonly bucket: string;
  readonly datasetPrefix: string;
}

/**
 * Publish samples: after training, the samples function copies what the job rendered to
 * `models/<job>/samples/`, and the captions it generated back to the dataset folder (its answer at
 * `$.samples`); then `next`. Samples are something to look
 * at, not the run's product: whatever still fails after the retries is recorded at `$.samples`
 * (`{Error, Cause}`, which Report mentions) and the run goes on with the trained LoRA.
 */
export function publishSamples(scope: Construct, samples: lambda.IFunction, folder: DatasetFolderRef, next: sfn.IChainable): sfn.State {
  const payload = {
    'trainingJobName.$': '$.run.training.jobName',
    datasetFolder: {
      bucket: folder.bucket,
      // A dataset folder is one segment below the prefix (lambda/prepare/input.ts resolveDataset).
      'prefix.$': `States.Format('${intrinsicLiteral(folder.datasetPrefix)}{}/', $.run.dataset.name)`,
    },
  };
  const publish = invokeFunction(scope, STATES.publishSamples, samples, payload, '$.samples');
  // A corrupt archive stays corrupt: caught at once rather than read three more times.
  publish.addRetry({ errors: [SAMPLES_ARCHIVE_INVALID], maxAttempts: 0 });
  publish.addRetry({ errors: [sfn.Errors.ALL], ...SAMPLES_RETRY });
  publish.addCatch(next, { errors: [sfn.Errors.ALL], resultPath: '$.samples' });
  publish.next(next);
  return publish;
}

/** `text` inside an intrinsic function's quoted string: quotes, braces and backslashes escaped. */
export function intrinsicLiteral(text: string): string {
  return text.replace(/[\\'{}]/g, (c) => `\\${c}`);
}
