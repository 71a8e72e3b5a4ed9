import { type PreparedRun } from '../../lambda/shared/contract';

/** A realistic Prepare answer for a `pokemon` run, as the workflow stores it at `$.run`. */
export function preparedRunFixture(run = 'lora-pokemon-20250101120000-abc123'): PreparedRun {
  return {
    settled: true,
    run,
    dataset: { name: 'pokemon', uri: 's3://datasets-bucket/datasets/pokemon/', images: 833, captions: 833 },
    modelType: 'sd15',
    baseModel: 'stable-diffusion-v1-5/stable-diffusion-v1-5',
    lora: { name: 'pokemon' },
    training: {
      jobName: run,
      hyperparameters: { max_train_steps: '1000' },
      inputDataConfig: [],
      resourceConfig: { InstanceType: 'ml.g5.2xlarge', InstanceCount: 1, VolumeSizeInGB: 50 },
      spot: true,
      stoppingCondition: { MaxRuntimeInSeconds: 7200, MaxWaitTimeInSeconds: 14400 },
      networkIsolation: false,
      environment: {},
    },
    serving: {
      mode: 'dedicated',
      modelName: run,
      endpointConfigName: run,
      endpointName: 'lora-pokemon',
      environment: { MODEL_TYPE: 'sd15' },
      additionalModelDataSources: [],
      networkIsolation: false,
      endpointConfig: { EndpointConfigName: run, ProductionVariants: [], Tags: [] },
    },
    tags: [{ Key: 'dataset', Value: 'pokemon' }],
  };
}

/** The same run, served by the deployment's shared endpoint: nothing deployed for it. */
export function sharedRunFixture(run = 'lora-pokemon-20250101120000-abc123'): PreparedRun {
  const dedicated = preparedRunFixture(run);
  return {
    ...dedicated,
    serving: { mode: 'shared', endpointName: 'lora-shared-sd15', inferenceComponentName: 'lora-shared-sd15' },
  };
}

/** A DescribeTrainingJob result as the `.sync` task returns it (JSON: timestamps as epoch milliseconds). */
export function trainingJobFixture(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  const name = 'lora-pokemon-20250101120000-abc123';
  return {
    TrainingJobName: name,
    TrainingJobArn: `arn:aws:sagemaker:eu-west-1:123456789012:training-job/${name}`,
    TrainingJobStatus: 'Completed',
    SecondaryStatus: 'Completed',
    EnableManagedSpotTraining: true,
    TrainingTimeInSeconds: 1000,
    BillableTimeInSeconds: 370,
    TrainingStartTime: 1735733000000,
    TrainingEndTime: 1735734000000,
    ModelArtifacts: { S3ModelArtifacts: `s3://artifacts-bucket/models/${name}/output/model.tar.gz` },
    SecondaryStatusTransitions: [
      { Status: 'Starting', StartTime: 1735732900000, EndTime: 1735733000000, StatusMessage: 'Preparing the instances for training' },
      { Status: 'Training', StartTime: 1735733000000, EndTime: 1735734000000, StatusMessage: 'Training image download completed.' },
    ],
    ...overrides,
  };
}
