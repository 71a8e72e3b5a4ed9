import type * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import type { Construct } from 'constructs';
import { STATES } from '../../lambda/shared/contract';
import type { PipelineStorage } from '../pipeline-storage';
import type { TrainingContainer } from '../training-container';
import type { FailurePath } from './fail-and-clean-up';
import { catchInto, retry, sagemakerTask } from './tasks';

/**
 * Train LoRA: a managed-spot training job with checkpoints, waited on (`.sync`), its
 * DescribeTrainingJob at `$.training`; then `next`.
 */
export function train(scope: Construct, storage: PipelineStorage, training: TrainingContainer, failure: FailurePath, next: sfn.IChainable): sfn.State {
  const bucket = storage.artifactsBucket.bucketName;
  const job = sagemakerTask(scope, STATES.train, 'sagemaker:createTrainingJob.sync', {
    Parameters: {
      'TrainingJobName.$': '$.run.training.jobName',
      RoleArn: training.role.roleArn,
      AlgorithmSpecification: {
        TrainingImage: training.imageUri,
        TrainingInputMode: 'File',
        MetricDefinitions: training.metricDefinitions,
      },
      'HyperParameters.$': '$.run.training.hyperparameters',
      'InputDataConfig.$': '$.run.training.inputDataConfig',
      OutputDataConfig: {
        S3OutputPath: `s3://${bucket}/${training.outputPrefix}`,
        KmsKeyId: storage.key.keyArn,
      },
      CheckpointConfig: {
        'S3Uri.$': `States.Format('s3://${bucket}/${training.checkpointsPrefix}{}/', $.run.training.jobName)`,
        LocalPath: '/opt/ml/checkpoints',
      },
      'ResourceConfig.$': '$.run.training.resourceConfig',
      'StoppingCondition.$': '$.run.training.stoppingCondition',
      'EnableManagedSpotTraining.$': '$.run.training.spot',
      'EnableNetworkIsolation.$': '$.run.training.networkIsolation',
      EnableInterContainerTrafficEncryption: true,
      'Tags.$': '$.run.tags',
      // HF_TOKEN_SECRET_ID when a Hugging Face token is configured (the secret's id, never the token); else empty.
      'Environment.$': '$.run.training.environment',
    },
    ResultPath: '$.training',
  });
  // Only the quota is retried: a generic error might come after the job was created, and the
  // same name again would be refused (ResourceInUse) while the first job runs on.
  retry(job);
  catchInto(job, failure.caught(STATES.trainingFailed));
  job.next(next);
  return job;
}
