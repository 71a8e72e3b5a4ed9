import { InvokeEndpointCommand, ModelError, ModelNotReadyException, SageMakerRuntimeClient, ValidationError } from '@aws-sdk/client-sagemaker-runtime';
import { mockClient } from 'aws-sdk-client-mock';
import 'aws-sdk-client-mock-jest';
import { checkLora } from '../../lambda/lora-check/check';

const runtimeMock = mockClient(SageMakerRuntimeClient);
const runtime = new SageMakerRuntimeClient({ region: 'eu-west-1' });
const EVENT = { endpointName: 'lora-shared-sd15', inferenceComponentName: 'lora-shared-sd15', lora: { name: 'pokemon', version: 3 }, modelType: 'sd15' };

function answer(body: unknown): void {
  runtimeMock.on(InvokeEndpointCommand).resolves({ Body: Buffer.from(JSON.stringify(body)) as never, ContentType: 'application/json' });
}

beforeEach(() => runtimeMock.reset());

test('one small request to the inference component with the exact version; the answer names the version and its hash', async () => {
  answer({ images: ['/9j/'], seed: 0, loras: [{ name: 'pokemon', version: 3, scale: 1, sha256: 'ab12' }] });
  let clock = 1000;
  const result = await checkLora(EVENT, runtime, () => (clock += 250));
  expect(result).toEqual({ endpointName: 'lora-shared-sd15', inferenceComponentName: 'lora-shared-sd15', lora: 'pokemon@3', sha256: 'ab12', milliseconds: 250 });
  const input = runtimeMock.commandCalls(InvokeEndpointCommand)[0].args[0].input;
  expect(input).toMatchObject({ EndpointName: 'lora-shared-sd15', InferenceComponentName: 'lora-shared-sd15', ContentType: 'application/json', Accept: 'application/json' });
  expect(JSON.parse(Buffer.from(input.Body as Uint8Array).toString())).toEqual({
    prompt: 'a test image',
    num_inference_steps: 2,
    width: 256,
    height: 256,
    seed: 0,
    output_format: 'jpeg',
    lora: 'pokemon@3',
  });
});

test("an SDXL endpoint gets SDXL's smallest side", async () => {
  answer({ loras: [{ name: 'pokemon', version: 3 }] });
  await checkLora({ ...EVENT, modelType: 'sdxl' }, runtime);
  const body = JSON.parse(Buffer.from(runtimeMock.commandCalls(InvokeEndpointCommand)[0].args[0].input.Body as Uint8Array).toString());
  expect([body.width, body.height]).toEqual([512, 512]);
});

test.each([
  ['another version', { loras: [{ name: 'pokemon', version: 2 }] }, 'used pokemon@2 instead of pokemon@3 alone'],
  ['a second LoRA besides', { loras: [{ name: 'pokemon', version: 3 }, { name: 'other', version: 1 }] }, 'used pokemon@3, other@1 instead of pokemon@3 alone'],
  ['no LoRA', { loras: [] }, 'used no LoRA instead of pokemon@3'],
  ['no loras list (a dedicated server)', { images: [] }, 'with 200 but no "loras" list'],
])("a 200 that used %s is the server's fault, not the LoRA's: SharedEndpointUnavailable", async (_, body, message) => {
  answer(body);
  await expect(checkLora(EVENT, runtime)).rejects.toMatchObject({ name: 'SharedEndpointUnavailable', message: expect.stringContaining(message) });
});

describe('what the endpoint answers instead', () => {
  test('no copy of the inference component (scaled to zero): SharedEndpointWarming, for the state to retry', async () => {
    // The message InvokeEndpoint gives while an inference component has no copies (AWS ML blog, "scale down to zero").
    const noCapacity =
      'Inference Component has no capacity to process this request. ApplicationAutoScaling may be in-progress (if configured) or try to increase the capacity by invoking UpdateInferenceComponentRuntimeConfig API.';
    runtimeMock.on(InvokeEndpointCommand).rejects(new ValidationError({ message: noCapacity, $metadata: { httpStatusCode: 400 } }));
    await expect(checkLora(EVENT, runtime)).rejects.toMatchObject({ name: 'SharedEndpointWarming', message: expect.stringContaining('has no copy ready to serve (ValidationError: Inference Component has no capacity') });
  });

  test('a model not ready yet is warming too', async () => {
    runtimeMock.on(InvokeEndpointCommand).rejects(new ModelNotReadyException({ message: 'Model is not ready', $metadata: {} }));
    await expect(checkLora(EVENT, runtime)).rejects.toMatchObject({ name: 'SharedEndpointWarming' });
  });

  test("the server's refusal: LoraCheckFailed with its status, its error message and where its logs are", async () => {
    runtimeMock.on(InvokeEndpointCommand).rejects(
      new ModelError({
        message: 'Received client error (410) from primary with message "..."',
        $metadata: { httpStatusCode: 424 },
        OriginalStatusCode: 410,
        OriginalMessage: JSON.stringify({ error: 'pokemon@3 failed its check and is not served', field: 'lora' }),
        LogStreamArn: 'arn:aws:logs:eu-west-1:123456789012:log-group:/aws/sagemaker/InferenceComponents/lora-shared-sd15',
      }),
    );
    await expect(checkLora(EVENT, runtime)).rejects.toMatchObject({
      name: 'LoraCheckFailed',
      message:
        'Generating with LoRA pokemon@3 on the inference component lora-shared-sd15 of endpoint lora-shared-sd15 failed: the server answered 410: ' +
        'pokemon@3 failed its check and is not served (field lora) (logs: arn:aws:logs:eu-west-1:123456789012:log-group:/aws/sagemaker/InferenceComponents/lora-shared-sd15).',
    });
  });

  /** A ModelError as SageMaker gives it: the container's status and JSON body. */
  const modelError = (status: number, error = 'x') =>
    new ModelError({ message: `Received error (${status}) from primary`, $metadata: { httpStatusCode: 424 }, OriginalStatusCode: status, OriginalMessage: JSON.stringify({ error, field: 'lora' }) });

  test.each([400, 410])('the server refusing the LoRA (%i) is LoraCheckFailed: the version is rejected', async (status) => {
    runtimeMock.on(InvokeEndpointCommand).rejects(modelError(status));
    await expect(checkLora(EVENT, runtime)).rejects.toMatchObject({ name: 'LoraCheckFailed', message: expect.stringContaining(`the server answered ${status}`) });
  });

  test('a 404 for the version just registered (the server cannot find it, or cannot read its file) is the deployment\'s fault: SharedEndpointUnavailable, never a rejection', async () => {
    runtimeMock.on(InvokeEndpointCommand).rejects(modelError(404, 'LoRA pokemon@3: its file is missing from S3 or not readable by the endpoint role'));
    await expect(checkLora(EVENT, runtime)).rejects.toMatchObject({ name: 'SharedEndpointUnavailable', message: expect.stringContaining('the server answered 404') });
  });

  test.each([429, 503, 504])('a busy endpoint (%i: at capacity, throttled, a download too slow) is SharedEndpointBusy, for the state to retry, never a rejection', async (status) => {
    runtimeMock.on(InvokeEndpointCommand).rejects(modelError(status, 'the registry is throttling; retry'));
    await expect(checkLora(EVENT, runtime)).rejects.toMatchObject({ name: 'SharedEndpointBusy', message: expect.stringContaining(`the server answered ${status}: the registry is throttling; retry`) });
  });

  test('a 500 (registry or S3 access misconfigured) or any other status is SharedEndpointUnavailable: the deployment, not the LoRA', async () => {
    runtimeMock.on(InvokeEndpointCommand).rejects(new ModelError({ message: 'x', $metadata: {}, OriginalStatusCode: 500, OriginalMessage: 'Internal Server Error' }));
    await expect(checkLora(EVENT, runtime)).rejects.toMatchObject({ name: 'SharedEndpointUnavailable', message: expect.stringContaining('the server answered 500: Internal Server Error.') });
    runtimeMock.on(InvokeEndpointCommand).rejects(new ModelError({ message: 'x', $metadata: {} }));
    await expect(checkLora(EVENT, runtime)).rejects.toMatchObject({ name: 'SharedEndpointUnavailable', message: expect.stringContaining('the server answered unknown') });
  });

  test('any other ValidationError (a missing component) is SharedEndpointUnavailable, not warming nor a rejection', async () => {
    runtimeMock.on(InvokeEndpointCommand).rejects(new ValidationError({ message: 'Inference Component lora-shared-sd15 not found.', $metadata: {} }));
    await expect(checkLora(EVENT, runtime)).rejects.toMatchObject({ name: 'SharedEndpointUnavailable', message: expect.stringContaining('(ValidationError): Inference Component lora-shared-sd15 not found.') });
  });

  test('throttling and faults keep their own name, for the Retry', async () => {
    runtimeMock.on(InvokeEndpointCommand).rejects(Object.assign(new Error('Rate exceeded'), { name: 'ThrottlingException', $metadata: {} }));
    await expect(checkLora(EVENT, runtime)).rejects.toMatchObject({ name: 'ThrottlingException' });
  });
});

test('a malformed event is a definition bug: a plain Error, and the endpoint is not called', async () => {
  await expect(checkLora({ ...EVENT, lora: { name: 'pokemon', version: 0 } }, runtime)).rejects.toMatchObject({ name: 'Error', message: expect.stringContaining("The LoRA check's event is invalid (lora.version") });
  await expect(checkLora({ ...EVENT, modelType: 'sd3' }, runtime)).rejects.toThrow('modelType');
  expect(runtimeMock).not.toHaveReceivedAnyCommand();
});
