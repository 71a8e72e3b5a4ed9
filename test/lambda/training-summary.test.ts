import { arnRegion, isoTime, spotSavingsPercent, summarizeTraining } from '../../lambda/shared/training-summary';
import { trainingJobFixture } from '../support/runs';

describe('summarizeTraining', () => {
  test('reads the numbers, the artifact, the transitions and the logs link of a spot job', () => {
    const summary = summarizeTraining(trainingJobFixture());
    expect(summary).toMatchObject({
      jobName: 'lora-pokemon-20250101120000-abc123',
      status: 'Completed',
      trainingSeconds: 1000,
      billableSeconds: 370,
      spotSavingsPercent: 63,
      modelArtifact: 's3://artifacts-bucket/models/lora-pokemon-20250101120000-abc123/output/model.tar.gz',
    });
    expect(summary.transitions).toEqual([
      { status: 'Starting', startTime: '2025-01-01T12:01:40.000Z', endTime: '2025-01-01T12:03:20.000Z', message: 'Preparing the instances for training' },
      { status: 'Training', startTime: '2025-01-01T12:03:20.000Z', endTime: '2025-01-01T12:20:00.000Z', message: 'Training image download completed.' },
    ]);
    expect(summary.logsUrl).toBe(
      'https://eu-west-1.console.aws.amazon.com/cloudwatch/home?region=eu-west-1' +
        '#logsV2:log-groups/log-group/$252Faws$252Fsagemaker$252FTrainingJobs$3FlogStreamNameFilter$3Dlora-pokemon-20250101120000-abc123',
    );
  });

  test('a job without spot saves nothing, whatever its billable time says', () => {
    expect(summarizeTraining(trainingJobFixture({ EnableManagedSpotTraining: false, BillableTimeInSeconds: 1000 })).spotSavingsPercent).toBe(0);
    expect(summarizeTraining(trainingJobFixture({ EnableManagedSpotTraining: false, BillableTimeInSeconds: 500 })).spotSavingsPercent).toBe(0);
    expect(summarizeTraining(trainingJobFixture({ BillableTimeInSeconds: undefined })).spotSavingsPercent).toBe(0);
  });

  test('zero training seconds give no savings rather than a division by zero', () => {
    const summary = summarizeTraining(trainingJobFixture({ TrainingTimeInSeconds: 0, BillableTimeInSeconds: 0 }));
    expect(summary.spotSavingsPercent).toBe(0);
    expect(summary.trainingSeconds).toBe(0);
  });

  test('the failure reason and status of a failed job are kept', () => {
    const summary = summarizeTraining(trainingJobFixture({ TrainingJobStatus: 'Failed', FailureReason: 'AlgorithmError: out of memory' }));
    expect(summary.status).toBe('Failed');
    expect(summary.failureReason).toBe('AlgorithmError: out of memory');
  });

  test.each([null, 'not a job', 42, [], { TrainingJobArn: 'garbage', SecondaryStatusTransitions: 'x' }])('never throws on %p', (job) => {
    const summary = summarizeTraining(job);
    expect(summary).toMatchObject({ trainingSeconds: 0, billableSeconds: 0, spotSavingsPercent: 0, transitions: [] });
    expect(summary.logsUrl).toBeUndefined();
  });
});

describe('spotSavingsPercent', () => {
  test.each([
    [1000, 370, 63],
    [3000, 1000, 66.7],
    [1000, 1000, 0],
    [1000, 1200, 0],
    [0, 0, 0],
    [0, 10, 0],
    [1000, 0, 0],
  ])('training %p s, billed %p s: %p %%', (training, billable, expected) => {
    expect(spotSavingsPercent(training, billable)).toBe(expected);
  });
});

describe('isoTime', () => {
  test.each([
    ['2025-01-01T12:00:00Z', '2025-01-01T12:00:00.000Z'],
    [1735732800, '2025-01-01T12:00:00.000Z'],
    [1735732800.5, '2025-01-01T12:00:00.500Z'],
    [1735732800000, '2025-01-01T12:00:00.000Z'],
    [new Date('2025-01-01T12:00:00Z'), '2025-01-01T12:00:00.000Z'],
  ])('%p is %p', (value, expected) => {
    expect(isoTime(value)).toBe(expected);
  });

  test.each([undefined, null, '', 'yesterday', Number.NaN, {}])('%p is no time', (value) => {
    expect(isoTime(value)).toBeUndefined();
  });
});

test('arnRegion reads the region of an ARN and nothing else', () => {
  expect(arnRegion('arn:aws:sagemaker:us-east-2:123456789012:training-job/x')).toBe('us-east-2');
  expect(arnRegion('arn:aws:sagemaker::123456789012:training-job/x')).toBeUndefined();
  expect(arnRegion('not-an-arn')).toBeUndefined();
});
