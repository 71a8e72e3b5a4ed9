import { S3Client } from '@aws-sdk/client-s3';
import { MAX_MESSAGE_BYTES } from '../../lambda/report/artifacts';
import { report } from '../../lambda/report/report';
import { type ArtifactLink, LINK_SECONDS, presign, runArtifacts } from '../../lambda/shared/artifact-links';
import type { PublishedSamples, ReportEvent, SmokeResult } from '../../lambda/shared/contract';
import { preparedRunFixture, sharedRunFixture, trainingJobFixture } from '../support/runs';

const execution = { name: 'pokemon-0123456789abcdef', startTime: '2025-01-01T11:55:00.000Z' };
const run = preparedRunFixture();
const job = run.training.jobName;
const now = new Date('2025-01-01T12:50:00.000Z');
const endpoint = { EndpointName: 'lora-pokemon', EndpointStatus: 'InService', EndpointConfigName: run.run };

const samples: PublishedSamples = {
  bucket: 'artifacts-bucket',
  prefix: `models/${job}/samples/`,
  count: 9,
  samplesJson: `models/${job}/samples/samples.json`,
  contactSheet: `models/${job}/samples/contact-sheet.png`,
  omitted: 0,
  prompt: 'a green pokemon',
};
const smoke: SmokeResult = {
  bucket: 'artifacts-bucket',
  withoutLora: `models/${job}/smoke/without-lora.png`,
  withLora: `models/${job}/smoke/with-lora.png`,
  sideBySide: `models/${job}/smoke/side-by-side.png`,
  prompt: 'a green pokemon',
  seed: 1234,
  width: 512,
  height: 512,
  steps: 20,
  meanAbsoluteDifference: 23.4,
  changedPixelShare: 0.8123,
  minMeanAbsoluteDifference: 2,
  milliseconds: 5000,
};

const succeeded = (extra: Record<string, unknown>, links: ArtifactLink[] = []) =>
  report({ outcome: 'succeeded', execution, run, training: trainingJobFixture(), endpoint, ...extra } as unknown as ReportEvent, { now, links, linkSeconds: LINK_SECONDS });

describe('a successful run: samples, smoke test and links', () => {
  test('the summary names where the samples and smoke images are (s3:// only), the message the numbers', () => {
    const result = succeeded({ samples, smoke });
    expect(result.summary?.samples).toEqual({ count: 9, location: `s3://artifacts-bucket/models/${job}/samples/`, contactSheet: `s3://artifacts-bucket/models/${job}/samples/contact-sheet.png` });
    expect(result.summary?.smoke).toEqual({ meanAbsoluteDifference: 23.4, changedPixelShare: 0.8123, minMeanAbsoluteDifference: 2, location: `s3://artifacts-bucket/models/${job}/smoke/` });
    expect(result.message).toContain('Smoke test passed: the same prompt and seed without and with the LoRA differ by 23.4 levels in 255 on average (81.2 % of pixels changed; the threshold is 2)');
    expect(result.message).toContain(`Samples: 9 files in s3://artifacts-bucket/models/${job}/samples/`);
  });

  test("a shared run's smoke test is read from its check", () => {
    const shared = sharedRunFixture();
    const check = { endpointName: 'lora-shared-sd15', inferenceComponentName: 'lora-shared-sd15', lora: 'pokemon@1', milliseconds: 1, smoke };
    const result = report({ outcome: 'succeeded', execution, run: shared, training: trainingJobFixture(), lora: { name: 'pokemon', version: 1 }, check, smoke: null } as unknown as ReportEvent, { now });
    expect(result.summary?.smoke?.meanAbsoluteDifference).toBe(23.4);
  });

  test('sampling off, or publishing failed: said so, and the run still succeeds', () => {
    expect(succeeded({ samples: { ...samples, count: 0, samplesJson: undefined, contactSheet: undefined } }).summary?.samples).toEqual({ count: 0, note: expect.stringContaining('rendered no samples') });
    const failed = succeeded({ samples: { Error: 'S3.AccessDenied', Cause: 'Access Denied' } });
    expect(failed.summary?.samples).toEqual({ count: 0, note: expect.stringContaining('Publishing the samples failed (S3.AccessDenied): Access Denied.') });
    expect(failed.summary?.samples?.note).toContain(`They stay in the job's s3://artifacts-bucket/models/${job}/output/output.tar.gz (under sample/).`);
    expect(failed.message).toContain('Samples: none. Publishing the samples failed');
    // A Lambda error's Cause is JSON with a stack trace: only its message is told.
    const lambdaCause = JSON.stringify({ errorType: 'SamplesArchiveInvalid', errorMessage: 's3://a/b is not a readable tar.gz (incorrect header check); its samples are not published.', trace: ['SamplesArchiveInvalid: …', '    at readArchive (/var/task/index.js:1:2)'] });
    const invalid = succeeded({ samples: { Error: 'SamplesArchiveInvalid', Cause: lambdaCause } });
    expect(invalid.summary?.samples?.note).toContain('Publishing the samples failed (SamplesArchiveInvalid): s3://a/b is not a readable tar.gz (incorrect header check); its samples are not published. They stay');
    expect(invalid.message).not.toContain('errorType');
    expect(invalid.message).not.toContain('/var/task');
    // A run from before these states: nothing said.
    expect(succeeded({}).summary).not.toHaveProperty('samples');
    expect(succeeded({}).summary).not.toHaveProperty('smoke');
  });

  test('links go into the message, with how long they last, and never into the summary', () => {
    const links: ArtifactLink[] = runArtifacts(samples, smoke).map((a) => ({ ...a, label: a.name, url: `https://example.com/${a.key}?X-Amz-Signature=abc` }));
    const result = succeeded({ samples, smoke }, links);
    expect(result.message).toContain('Links (valid 60 minutes, or less if the signing credentials expire first; the status function gives fresh ones):');
    for (const link of links) expect(result.message).toContain(link.url);
    expect(JSON.stringify(result.summary)).not.toContain('X-Amz-Signature');
  });

  test('links that would take the message over SNS\'s limit are left out, saying where to get them (control: the same links, short, are kept)', () => {
    const long = (size: number): ArtifactLink[] => runArtifacts(samples, smoke).map((a) => ({ ...a, label: a.name, url: `https://example.com/${'x'.repeat(size)}` }));
    const big = succeeded({ samples, smoke }, long(MAX_MESSAGE_BYTES / 4));
    expect(Buffer.byteLength(big.message)).toBeLessThanOrEqual(MAX_MESSAGE_BYTES);
    expect(big.message).toContain('ask the status function (they did not fit in this message)');
    expect(succeeded({ samples, smoke }, long(100)).message).toContain('https://example.com/xxx');
  });
});

describe('the links', () => {
  test('runArtifacts names samples.json, the contact sheet and the three smoke images, and nothing for errors or nulls', () => {
    expect(runArtifacts(samples, smoke).map((a) => [a.name, a.key])).toEqual([
      ['samplesJson', `models/${job}/samples/samples.json`],
      ['contactSheet', `models/${job}/samples/contact-sheet.png`],
      ['withoutLora', `models/${job}/smoke/without-lora.png`],
      ['withLora', `models/${job}/smoke/with-lora.png`],
      ['sideBySide', `models/${job}/smoke/side-by-side.png`],
    ]);
    expect(runArtifacts({ Error: 'x', Cause: 'y' }, null)).toEqual([]);
    expect(runArtifacts({ ...samples, contactSheet: undefined }, undefined).map((a) => a.name)).toEqual(['samplesJson']);
  });

  test('presigned GET links for the object, valid an hour, signed with the session token when there is one', async () => {
    const s3 = new S3Client({ region: 'eu-west-1', credentials: { accessKeyId: 'ASIAEXAMPLE', secretAccessKey: 'secret', sessionToken: 'session-token' } });
    const [link] = await presign(s3, runArtifacts(samples, null).slice(1));
    const url = new URL(link.url);
    expect(url.hostname).toBe('artifacts-bucket.s3.eu-west-1.amazonaws.com');
    expect(url.pathname).toBe(`/models/${job}/samples/contact-sheet.png`);
    expect(url.searchParams.get('X-Amz-Expires')).toBe('3600');
    expect(url.searchParams.get('X-Amz-Security-Token')).toBe('session-token');
    expect(url.searchParams.get('X-Amz-Credential')).toMatch(/^ASIAEXAMPLE\//);
    // A browser sends Host and nothing else: any other signed header (SSE, checksum) breaks the link.
    expect(url.searchParams.get('X-Amz-SignedHeaders')).toBe('host');
    expect(link.label).toBe('contact sheet');
  });

  test('the Report handler still answers, without links, when signing throws', async () => {
    const write = jest.spyOn(process.stdout, 'write').mockImplementation(() => true);
    const log = jest.spyOn(console, 'log').mockImplementation(() => undefined);
    const warn = jest.spyOn(console, 'warn').mockImplementation(() => undefined);
    try {
      await jest.isolateModulesAsync(async () => {
        jest.doMock('@aws-sdk/s3-request-presigner', () => ({ getSignedUrl: () => Promise.reject(new Error('Could not load credentials from any providers')) }));
        const { handler } = await import('../../lambda/report/index');
        const result = await handler({ outcome: 'succeeded', execution, run, training: trainingJobFixture(), endpoint, samples, smoke } as unknown as ReportEvent);
        expect(result.summary?.samples).toMatchObject({ count: 9 });
        expect(result.message).toContain('Smoke test passed');
        expect(result.message).not.toContain('Links (valid');
        expect(warn.mock.calls.some(([text]) => String(text).includes('Links not signed'))).toBe(true);
      });
    } finally {
      jest.dontMock('@aws-sdk/s3-request-presigner');
      write.mockRestore();
      log.mockRestore();
      warn.mockRestore();
    }
  });
});

describe('a failed smoke test', () => {
  const cause = JSON.stringify({ errorType: 'SmokeTestFailed', errorMessage: 'The LoRA had no effect: … a mean difference of 0.1 levels in 255 (the threshold is 2).' });

  test('shared: SmokeTestFailed with the reason; the version is marked failed by the clean-up, the current one unchanged', () => {
    const shared = sharedRunFixture();
    const result = report(
      { outcome: 'failed', execution, stage: 'smoke', error: { Error: 'SmokeTestFailed', Cause: cause }, state: { run: shared, lora: { name: 'pokemon', version: 4 } } },
      { now },
    );
    expect(result.error).toBe('SmokeTestFailed');
    expect(result.cause).toBe(
      'The LoRA had no effect: … a mean difference of 0.1 levels in 255 (the threshold is 2). pokemon@4 will be marked failed by the clean-up that follows this report and was not made current; the name\'s current version is unchanged.',
    );
    expect(result.cleanup).toEqual({ loraVersion: { name: 'pokemon', version: 4 } });
  });

  test('dedicated, an endpoint this run created: it goes, with its model and config', () => {
    const result = report({ outcome: 'failed', execution, stage: 'smoke', error: { Error: 'SmokeTestFailed', Cause: cause }, state: { run, endpoint, deployment: { endpointExisted: false } } }, { now });
    expect(result.error).toBe('SmokeTestFailed');
    expect(result.cleanup).toEqual({ modelName: run.run, endpointConfigName: run.run, endpointName: 'lora-pokemon' });
    expect(result.cause).toContain('Endpoint lora-pokemon, which this run created, is deleted by the clean-up');
    expect(result.message).toContain(`Cleaned up: ${run.run}, ${run.run}, lora-pokemon`);
  });

  test('dedicated, an endpoint this run updated: rolled back to the previous config by the clean-up; this run\'s model and config kept while it moves', () => {
    const previous = 'lora-pokemon-20241231000000-000000';
    const state = { run, endpoint, deployment: { endpointExisted: true }, existing: { status: 'InService', endpointConfigName: previous } };
    const result = report({ outcome: 'failed', execution, stage: 'smoke', error: { Error: 'SmokeTestFailed', Cause: cause }, state }, { now });
    expect(result.error).toBe('SmokeTestFailed');
    // UpdateEndpoint's request as is; nothing to delete.
    expect(result.cleanup).toEqual({ rollBack: { EndpointName: 'lora-pokemon', EndpointConfigName: previous } });
    expect(result.cause).toContain(`Endpoint lora-pokemon was updated to this run; the clean-up that follows this report rolls it back to endpoint config ${previous}, the one it served before`);
    expect(result.cause).toContain(`This run's model ${run.run} and endpoint config ${run.run} are kept while the endpoint moves off them`);
    expect(result.cause).toContain(`aws sagemaker delete-endpoint-config --endpoint-config-name ${run.run} && aws sagemaker delete-model --model-name ${run.run}`);
    expect(result.cause).toContain('npx lora-pipeline cleanup pokemon removes them once a later run serves the dataset');
    // The way back by hand, should the clean-up's call fail.
    expect(result.cause).toContain(`aws sagemaker update-endpoint --endpoint-name lora-pokemon --endpoint-config-name ${previous}.`);
    expect(result.message).toContain(`To be rolled back by the clean-up: endpoint lora-pokemon, to endpoint config ${previous}`);
    expect(result.message).not.toContain('Cleaned up:');
  });

  test('dedicated, updated, but the previous config unknown: nothing to roll back to, nothing deleted (control)', () => {
    const state = { run, endpoint, deployment: { endpointExisted: true } };
    const result = report({ outcome: 'failed', execution, stage: 'smoke', error: { Error: 'SmokeTestFailed', Cause: cause }, state }, { now });
    expect(result.cleanup).toBeUndefined();
    expect(result.cause).toContain('Endpoint lora-pokemon was updated to this run and still serves it');
  });

  test('a shared run never gets a roll-back, whatever its state holds (the shared path reaches Roll the endpoint back only through it)', () => {
    const state = { run: sharedRunFixture(), lora: { name: 'pokemon', version: 4 }, deployment: { endpointExisted: true }, existing: { status: 'InService', endpointConfigName: 'lora-shared-sd15' } };
    const result = report({ outcome: 'failed', execution, stage: 'smoke', error: { Error: 'SmokeTestFailed', Cause: cause }, state } as unknown as ReportEvent, { now });
    expect(result.cleanup).toEqual({ loraVersion: { name: 'pokemon', version: 4 } });
  });

  test('an error other than the verdict (busy after the retries, a fault): still SmokeTestFailed, naming what was caught', () => {
    const busy = JSON.stringify({ errorType: 'EndpointBusy', errorMessage: 'Endpoint lora-pokemon failed the smoke test\'s request with the LoRA: the server answered 503: busy.' });
    const result = report({ outcome: 'failed', execution, stage: 'smoke', error: { Error: 'EndpointBusy', Cause: busy }, state: { run, endpoint, deployment: { endpointExisted: false } } }, { now });
    expect(result.error).toBe('SmokeTestFailed');
    expect(result.cause).toMatch(/^The smoke test could not be completed \(EndpointBusy\): Endpoint lora-pokemon failed/);
  });
});
