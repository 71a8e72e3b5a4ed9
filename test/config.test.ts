import { App } from 'aws-cdk-lib';
import { CONFIG_FIELDS, ConfigError, configFromContext, DEFAULT_BASE_MODELS, parseConfig } from '../lib/config';
import { INSTANCE_MEMORY } from '../lib/shared-endpoint-sizing';

/** Parses as `bin/app.ts` does, from context values given as `cdk.json` or `-c` would. */
function parse(values: Record<string, unknown>) {
  return parseConfig(values);
}

/** The problems a bad configuration is rejected with. */
function problemsOf(values: Record<string, unknown>): readonly string[] {
  try {
    parse(values);
  } catch (error) {
    if (error instanceof ConfigError) return error.problems;
    throw error;
  }
  throw new Error(`expected ${JSON.stringify(values)} to be rejected`);
}

describe('configuration defaults', () => {
  test('an empty context gives the documented defaults', () => {
    expect(parse({})).toEqual({
      stackName: 'SageMakerLoraPipeline',
      datasetPrefix: 'datasets/',
      triggerFileName: 'dataset.toml',
      namePrefix: 'lora',
      settleSeconds: 60,
      modelType: 'sd15',
      baseModel: 'stable-diffusion-v1-5/stable-diffusion-v1-5',
      training: { instanceType: 'ml.g4dn.xlarge', spot: true, maxRuntimeSeconds: 3600, maxWaitSeconds: 7200, volumeSizeGb: 50 },
      endpoint: {
        instanceType: 'ml.g4dn.xlarge',
        instanceCount: 1,
        mode: 'shared',
        minInstances: 1,
        maxInstances: 1,
        loraCache: { gpuMb: 2048, hostMb: 4096, diskMb: 20480 },
      },
      notificationEmail: undefined,
      removalPolicy: 'retain',
      logRetentionDays: 90,
      storage: { checkpointExpirationDays: 7, noncurrentVersionExpirationDays: 30, accessLogExpirationDays: 365 },
    });
  });

  test('the default base model follows the model type', () => {
    expect(parse({ modelType: 'sdxl' }).baseModel).toBe(DEFAULT_BASE_MODELS.sdxl);
    expect(parse({ modelType: 'sdxl', baseModel: 'me/my-xl' }).baseModel).toBe('me/my-xl');
  });

  test.each(Object.entries(DEFAULT_BASE_MODELS))('the %s default base model %s is itself a valid baseModel', (modelType, baseModel) => {
    expect(parse({ modelType, baseModel }).baseModel).toBe(baseModel);
  });
});

describe('configuration overrides', () => {
  test('typed values from cdk.json are taken as they are', () => {
    const config = parse({
      'training.spot': false,
      'training.maxRuntimeSeconds': 7200,
      'training.maxWaitSeconds': 60,
      'endpoint.instanceCount': 2,
      removalPolicy: 'destroy',
      logRetentionDays: 365,
    });
    expect(config.training).toMatchObject({ spot: false, maxRuntimeSeconds: 7200, maxWaitSeconds: 60 });
    expect(config.endpoint.instanceCount).toBe(2);
    expect(config.removalPolicy).toBe('destroy');
    expect(config.logRetentionDays).toBe(365);
  });

  test('string values from -c are converted', () => {
    const config = parse({ settleSeconds: '0', 'training.spot': 'false', 'training.volumeSizeGb': ' 200 ', logRetentionDays: '30' });
    expect(config.settleSeconds).toBe(0);
    expect(config.training.spot).toBe(false);
    expect(config.training.volumeSizeGb).toBe(200);
    expect(config.logRetentionDays).toBe(30);
  });

  test.each([
    ['s3 single file', 's3://my-models/sd/chilloutmix_NiPrunedFp32Fix.safetensors'],
    ['s3 ckpt', 's3://my-models/v1-5-pruned.ckpt'],
    ['s3 diffusers folder', 's3://my-models/diffusers/sd15/'],
    ['hub id', 'runwayml/stable-diffusion-v1-5'],
  ])('baseModel accepts a %s', (_, baseModel) => {
    expect(parse({ baseModel }).baseModel).toBe(baseModel);
  });

  test('other GPU families, prefixes and e-mail are accepted', () => {
    const config = parse({
      'training.instanceType': 'ml.g5.2xlarge',
      'endpoint.instanceType': 'ml.p4d.24xlarge',
      datasetPrefix: 'teams/art/datasets/',
      triggerFileName: 'READY',
      notificationEmail: 'ml-team@example.com',
    });
    expect(config).toMatchObject({ datasetPrefix: 'teams/art/datasets/', triggerFileName: 'READY', notificationEmail: 'ml-team@example.com' });
  });

  test('cdk.json may group keys in objects; a dotted key given as well wins', () => {
    const config = parse({ training: { spot: false, maxRuntimeSeconds: 1800 }, endpoint: { instanceCount: 3 }, 'training.maxRuntimeSeconds': '900' });
    expect(config.training).toMatchObject({ spot: false, maxRuntimeSeconds: 900 });
    expect(config.endpoint.instanceCount).toBe(3);
  });

  test('spot off lifts the MaxWait rule, which only concerns spot jobs', () => {
    expect(parse({ 'training.spot': 'false', 'training.maxWaitSeconds': 10 }).training.maxWaitSeconds).toBe(10);
  });

  test('CDK context of other tools is left alone', () => {
    expect(() => parse({ '@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy': true, 'aws:cdk:bundling-stacks': [], 'cli-telemetry': false })).not.toThrow();
  });

  test('configFromContext reads an App node, including -c style string values', () => {
    const app = new App({ context: { 'training.maxRuntimeSeconds': '1800', modelType: 'sdxl' } });
    const config = configFromContext(app.node);
    expect(config.training.maxRuntimeSeconds).toBe(1800);
    expect(config.baseModel).toBe(DEFAULT_BASE_MODELS.sdxl);
  });
});

describe('configuration errors name the key, the value and what is allowed', () => {
  test.each([
    ['wrong type', 'settleSeconds', 'soon', 'an integer from 0 to 3600'],
    ['fraction for an integer', 'training.volumeSizeGb', 10.5, 'an integer from 1 to 16384'],
    ['below range', 'settleSeconds', -1, 'an integer from 0 to 3600'],
    ['above range', 'endpoint.instanceCount', 21, 'an integer from 1 to 20'],
    ['not a boolean', 'training.spot', 'yes', 'true or false'],
    ['unknown enum', 'modelType', 'sd3', "'sd15', 'sdxl' or 'flux1'"],
    ['unknown removal policy', 'removalPolicy', 'delete', "'retain' or 'destroy'"],
    ['retention CloudWatch refuses', 'logRetentionDays', 10, 'one of 1, 3, 5, 7, 14, 30'],
    ['CPU instance', 'training.instanceType', 'ml.m5.xlarge', 'GPU instance type'],
    ['malformed instance', 'endpoint.instanceType', 'g4dn.xlarge', 'GPU instance type'],
    ['prefix without slash', 'datasetPrefix', 'datasets', "ending in '/'"],
    ['prefix escaping upwards', 'datasetPrefix', 'datasets/../', "no '.' or '..' segments"],
    ['trigger with a path', 'triggerFileName', 'x/dataset.toml', 'a file name'],
    ['name prefix in capitals', 'namePrefix', 'Lora', 'a lowercase letter'],
    ['name prefix with a hyphen', 'namePrefix', 'lo-ra', 'a lowercase letter'],
    ['name prefix too long for run names', 'namePrefix', 'abcdefghijk', 'up to 9'],
    ['trigger clashing with train.json', 'triggerFileName', 'train.json', "other than 'train.json'"],
    // A generated caption written back next to its image must never be taken for the trigger.
    ['trigger named like a caption', 'triggerFileName', 'START.txt', 'not ending in .txt or .caption'],
    ['trigger named like a .caption caption', 'triggerFileName', 'go.Caption', 'not ending in .txt or .caption'],
    ['s3 URI of an unsupported file', 'baseModel', 's3://my-models/model.bin', 'an s3:// URI of a .safetensors or .ckpt file'],
    ['hub id without owner', 'baseModel', 'stable-diffusion-v1-5', "Hugging Face repo id 'owner/name'"],
    ['hub id with a double hyphen', 'baseModel', 'owner/bad--name', "Hugging Face repo id 'owner/name'"],
    ['hub id with a double dot', 'baseModel', 'owner/bad..name', "Hugging Face repo id 'owner/name'"],
    ['hub id ending in a dot', 'baseModel', 'owner/name.', "Hugging Face repo id 'owner/name'"],
    ['s3 URI with a dot-dot segment', 'baseModel', 's3://my-models/../x.ckpt', 'an s3:// URI'],
    ['s3 URI with an IP-address bucket', 'baseModel', 's3://192.168.1.1/x.ckpt', 'an s3:// URI'],
    ['bad e-mail', 'notificationEmail', 'ml-team', 'an e-mail address'],
    ['unknown endpoint mode', 'endpoint.mode', 'serverless', "'shared' or 'dedicated'"],
    ['negative minimum', 'endpoint.minInstances', -1, 'an integer from 0 to 20'],
    ['zero maximum', 'endpoint.maxInstances', 0, 'an integer from 1 to 20'],
    ['maximum above the quota-sized range', 'endpoint.maxInstances', 21, 'an integer from 1 to 20'],
    ['no GPU cache', 'endpoint.loraCacheGpuMb', 0, 'an integer from 1024 to 81920'],
    ['a host cache too small for three LoRAs', 'endpoint.loraCacheHostMb', 512, 'an integer from 1024 to 262144'],
    ['disk cache as a size string', 'endpoint.loraCacheDiskMb', '20GB', 'an integer from 1024 to 1048576'],
    ['bad stack name', 'stackName', '1-stack', 'a CloudFormation stack name'],
  ])('%s: %s = %j', (_, key, value, allowed) => {
    const problems = problemsOf({ [key]: value });
    expect(problems).toHaveLength(1);
    expect(problems[0]).toContain(`"${key}"`);
    expect(problems[0]).toContain(JSON.stringify(value));
    expect(problems[0]).toContain(allowed);
  });

  test('a spot job whose MaxWait is below its MaxRuntime is refused', () => {
    const [problem] = problemsOf({ 'training.maxWaitSeconds': '10' });
    expect(problem).toMatch(/"training\.maxWaitSeconds" = 10 .*at least training\.maxRuntimeSeconds \(3600\)/);
  });

  test('the shared endpoint may not have more instances at its minimum than at its maximum', () => {
    const [problem] = problemsOf({ 'endpoint.minInstances': 3, 'endpoint.maxInstances': 2 });
    expect(problem).toMatch(/^"endpoint\.maxInstances" = 2 .*at least endpoint\.minInstances \(3\)/);
    // Negative control: equal bounds, and scale to zero up to one instance, are fine.
    expect(parse({ 'endpoint.minInstances': 3, 'endpoint.maxInstances': 3 }).endpoint).toMatchObject({ minInstances: 3, maxInstances: 3 });
    expect(parse({ 'endpoint.minInstances': '0' }).endpoint).toMatchObject({ minInstances: 0, maxInstances: 1 });
  });

  test('the LoRA cache tiers are nested: GPU ≤ host memory ≤ disk', () => {
    expect(problemsOf({ 'endpoint.loraCacheGpuMb': 4097 })[0]).toMatch(/^"endpoint\.loraCacheGpuMb" = 4097 .*at most endpoint\.loraCacheHostMb \(4096\)/);
    expect(problemsOf({ 'endpoint.loraCacheHostMb': 30000 })[0]).toMatch(/^"endpoint\.loraCacheHostMb" = 30000 .*at most endpoint\.loraCacheDiskMb \(20480\)/);
    expect(problemsOf({ endpoint: { loraCacheGpuMb: 3000, loraCacheHostMb: 2000, loraCacheDiskMb: 1024 } })).toHaveLength(2);
    // Negative control: equal tiers, at the smallest size, are fine.
    expect(parse({ endpoint: { loraCacheGpuMb: 1024, loraCacheHostMb: '1024', loraCacheDiskMb: 1024 } }).endpoint.loraCache).toEqual({ gpuMb: 1024, hostMb: 1024, diskMb: 1024 });
  });

  test("the shared endpoint's host memory reservation and GPU cache must fit a known instance type, naming the keys", () => {
    // ml.g4dn.xlarge: 16 GiB of host memory, 14336 MB after the system's 2 GiB; SDXL reserves the cache + 6144 + 2048 MB.
    const [host] = problemsOf({ modelType: 'sdxl', 'endpoint.loraCacheHostMb': 8192 });
    expect(host).toMatch(/^"endpoint\.loraCacheHostMb" = 8192 is not allowed on "endpoint\.instanceType" ml\.g4dn\.xlarge: .*\(16384 MB\), more than the 14336 MB .* at most 6144, or choose a larger endpoint\.instanceType, such as ml\.g4dn\.2xlarge \(32 GiB\)$/);
    // Its T4 has 16 GiB: SDXL's pipeline about 10240 MB and CUDA 1024 leave 5120 for the GPU cache.
    const [gpu] = problemsOf({ modelType: 'sdxl', 'endpoint.loraCacheGpuMb': 6000, 'endpoint.loraCacheHostMb': 6144 });
    expect(gpu).toMatch(/^"endpoint\.loraCacheGpuMb" = 6000 is not allowed on "endpoint\.instanceType" ml\.g4dn\.xlarge: its NVIDIA T4 has 16 GiB.* at most 5120/);
    // Controls: the limits themselves, the same sizes on a larger instance, the defaults on the default type, an unknown type, and dedicated mode.
    expect(() => parse({ modelType: 'sdxl', 'endpoint.loraCacheHostMb': 6144, 'endpoint.loraCacheGpuMb': 5120 })).not.toThrow();
    expect(() => parse({ modelType: 'sdxl', 'endpoint.loraCacheHostMb': 8192, 'endpoint.loraCacheGpuMb': 6000, 'endpoint.instanceType': 'ml.g6e.xlarge' })).not.toThrow();
    expect(() => parse({ modelType: 'sdxl' })).not.toThrow();
    expect(() => parse({})).not.toThrow();
    expect(() => parse({ modelType: 'sdxl', 'endpoint.loraCacheHostMb': 8192, 'endpoint.instanceType': 'ml.g7e.2xlarge' })).not.toThrow();
    expect(() => parse({ modelType: 'sdxl', 'endpoint.loraCacheHostMb': 8192, 'endpoint.mode': 'dedicated' })).not.toThrow();
  });

  test('every known instance type takes the default cache sizes for both families', () => {
    for (const instanceType of Object.keys(INSTANCE_MEMORY)) {
      for (const modelType of ['sd15', 'sdxl'] as const) expect(() => parse({ modelType, 'endpoint.instanceType': instanceType })).not.toThrow();
    }
  });

  test('dedicated mode is accepted, and keeps instanceCount for the dedicated endpoints', () => {
    expect(parse({ 'endpoint.mode': 'dedicated', 'endpoint.instanceCount': '2' }).endpoint).toMatchObject({ mode: 'dedicated', instanceCount: 2 });
  });

  test('checkpoints must outlive the longest training job', () => {
    const [problem] = problemsOf({ 'storage.checkpointExpirationDays': 1, 'training.maxWaitSeconds': 2 * 86400 });
    expect(problem).toMatch(/"storage\.checkpointExpirationDays" = 1 .*172800 s/);
  });

  test('an unknown key in one of our namespaces is refused, with the key it probably meant', () => {
    const [problem] = problemsOf({ 'training.maxWaitSecond': 7200 });
    expect(problem).toContain('unknown key "training.maxWaitSecond"; did you mean "training.maxWaitSeconds"?');
  });

  test('an unknown key in a namespace is refused even when it resembles no key', () => {
    const [problem] = problemsOf({ 'training.foo': 1 });
    expect(problem).toMatch(/^unknown key "training\.foo"\. Known keys: stackName, /);
  });

  test('an unknown key inside a grouped object is refused', () => {
    expect(problemsOf({ storage: { checkpointExpirationDay: 9 } })[0]).toContain(
      'unknown key "storage.checkpointExpirationDay"; did you mean "storage.checkpointExpirationDays"?',
    );
  });

  test.each(['trainng', 'Training'])('a group under the misspelt namespace %s is refused, not ignored', (key) => {
    expect(problemsOf({ [key]: { spot: false } })[0]).toBe(`unknown key "${key}"; did you mean "training"? Its settings would be ignored.`);
  });

  test('a dotted key set to null leaves the grouped value in force', () => {
    expect(parse({ training: { spot: false }, 'training.spot': null }).training.spot).toBe(false);
  });

  test('a namespace given as something other than an object is refused', () => {
    expect(problemsOf({ training: 'fast' })[0]).toBe(
      '"training" = "fast" is not allowed: expected an object of training settings, or dotted keys such as "training.instanceType"',
    );
  });

  test("the other model type's default base model is refused, saying what to change", () => {
    expect(problemsOf({ baseModel: DEFAULT_BASE_MODELS.sdxl })[0]).toContain('set modelType to "sdxl"');
    expect(problemsOf({ modelType: 'sdxl', baseModel: DEFAULT_BASE_MODELS.sd15 })[0]).toContain('set modelType to "sd15"');
  });

  test('a near-miss of a top-level key is refused', () => {
    expect(problemsOf({ settleSecond: 5 })[0]).toContain('did you mean "settleSeconds"?');
    expect(problemsOf({ datasetprefix: 'x/' })[0]).toContain('did you mean "datasetPrefix"?');
  });

  test('every problem is reported at once', () => {
    const problems = problemsOf({ settleSeconds: -5, modelType: 'sd3', 'endpoint.instanceCount': 0 });
    expect(problems.map((p) => p.split('"')[1])).toEqual(['settleSeconds', 'modelType', 'endpoint.instanceCount']);
  });

  test('the error message lists each problem on its own line', () => {
    expect(() => parse({ modelType: 'sd3' })).toThrow(/^Invalid configuration:\n {2}- "modelType" = "sd3"/);
  });
});

describe('FLUX.1', () => {
  const SECRET_ARN = 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:hf/token-AbC123';

  test('defaults sized for the model: schnell, an A10G to train with fp8_base for up to 6 hours, an L40S to serve (64 GiB shared), a 150 GB volume', () => {
    const config = parse({ modelType: 'flux1' });
    expect(config).toMatchObject({
      baseModel: 'black-forest-labs/FLUX.1-schnell',
      training: { instanceType: 'ml.g5.2xlarge', volumeSizeGb: 150, maxRuntimeSeconds: 21600, maxWaitSeconds: 43200 },
      endpoint: { instanceType: 'ml.g6e.2xlarge', mode: 'shared', loraCache: { gpuMb: 2048, hostMb: 4096, diskMb: 20480 } },
    });
    // Dedicated endpoints hold no LoRA cache: the 32 GiB L40S type.
    expect(parse({ modelType: 'flux1', 'endpoint.mode': 'dedicated' }).endpoint.instanceType).toBe('ml.g6e.xlarge');
    expect(config.huggingFaceTokenSecret).toBeUndefined();
    // Negative control: the same keys keep the SD defaults for the other families.
    expect(parse({ modelType: 'sdxl' })).toMatchObject({
      training: { instanceType: 'ml.g4dn.xlarge', volumeSizeGb: 50, maxRuntimeSeconds: 3600, maxWaitSeconds: 7200 },
      endpoint: { instanceType: 'ml.g4dn.xlarge' },
    });
  });

  test('a given MaxRuntime above the per-type MaxWait is still refused for spot, naming both', () => {
    expect(problemsOf({ modelType: 'flux1', 'training.maxRuntimeSeconds': 50000 })[0]).toMatch(/^"training\.maxWaitSeconds" = 43200 is not allowed: .* \(50000\)/);
    expect(parse({ modelType: 'flux1', 'training.maxRuntimeSeconds': 50000, 'training.spot': false }).training.maxWaitSeconds).toBe(43200);
  });

  test('given instance types and volume win over the per-type defaults', () => {
    const config = parse({ modelType: 'flux1', 'training.instanceType': 'ml.g6e.2xlarge', 'training.volumeSizeGb': '200', 'endpoint.instanceType': 'ml.g6e.2xlarge' });
    expect(config.training).toMatchObject({ instanceType: 'ml.g6e.2xlarge', volumeSizeGb: 200 });
    expect(config.endpoint.instanceType).toBe('ml.g6e.2xlarge');
  });

  test('instances and volume too small for FLUX.1 are refused, each saying what fits', () => {
    const problems = problemsOf({ modelType: 'flux1', 'training.instanceType': 'ml.g4dn.xlarge', 'training.volumeSizeGb': 80, 'endpoint.instanceType': 'ml.g5.2xlarge' });
    expect(problems).toEqual([
      expect.stringMatching(/^"training\.instanceType" = "ml\.g4dn\.xlarge" is not allowed with modelType "flux1": ml\.g4dn\.xlarge cannot train FLUX\.1: .* no bf16.*; use ml\.g5\.2xlarge/),
      expect.stringMatching(/^"training\.volumeSizeGb" = 80 is not allowed with modelType "flux1": .* at least 100 GB/),
      // Reported once, for the GPU, not again for the cache sizes that could not fit it either.
      expect.stringMatching(/^"endpoint\.instanceType" = "ml\.g5\.2xlarge" is not allowed with modelType "flux1": .* at least 40 GB; use ml\.g6e\.xlarge/),
    ]);
    // Negative control: the same instances are fine for SDXL.
    expect(() => parse({ modelType: 'sdxl', 'training.instanceType': 'ml.g4dn.xlarge', 'training.volumeSizeGb': 80, 'endpoint.instanceType': 'ml.g5.2xlarge' })).not.toThrow();
  });

  test("a shared FLUX.1 endpoint on 32 GiB: its ~22 GB of pristine weights leave room for a smaller LoRA host cache only, which the message gives, with a type that fits", () => {
    expect(problemsOf({ modelType: 'flux1', 'endpoint.instanceType': 'ml.g6e.xlarge' })).toEqual([
      expect.stringMatching(/^"endpoint\.loraCacheHostMb" = 4096 is not allowed on "endpoint\.instanceType" ml\.g6e\.xlarge: .*22600 MB of pristine flux1 weights and 4096 MB for the server \(30792 MB\), more than the 29491 MB .* at most 2795, or choose a larger endpoint\.instanceType, such as ml\.g6e\.2xlarge \(64 GiB\)$/),
    ]);
    expect(() => parse({ modelType: 'flux1', 'endpoint.instanceType': 'ml.g6e.xlarge', 'endpoint.loraCacheHostMb': 2795, 'endpoint.loraCacheGpuMb': 2048 })).not.toThrow();
  });

  test('the serving rule holds in dedicated mode too', () => {
    expect(problemsOf({ modelType: 'flux1', 'endpoint.mode': 'dedicated', 'endpoint.instanceType': 'ml.g5.12xlarge' })[0]).toMatch(/^"endpoint\.instanceType" = "ml\.g5\.12xlarge"/);
  });

  test('every known instance type that can serve FLUX.1 with 64 GiB takes the default cache sizes', () => {
    const servable = Object.entries(INSTANCE_MEMORY).filter(([, m]) => m.gpuGiB >= 40 && m.hostGiB >= 64);
    expect(servable.length).toBeGreaterThan(3);
    for (const [instanceType] of servable) expect(() => parse({ modelType: 'flux1', 'endpoint.instanceType': instanceType })).not.toThrow();
  });

  test('the base model is one of the two pinned Hub ids, or an S3 folder', () => {
    expect(parse({ modelType: 'flux1', baseModel: 's3://models/flux1/' }).baseModel).toBe('s3://models/flux1/');
    expect(problemsOf({ modelType: 'flux1', baseModel: 's3://models/flux1/flux1-dev.safetensors' })[0]).toMatch(
      /^"baseModel" = "s3:\/\/models\/flux1\/flux1-dev\.safetensors" is not allowed with modelType "flux1": .*folder .* not a single file/,
    );
    expect(problemsOf({ modelType: 'flux1', baseModel: 'someone/FLUX.1-finetune' })[0]).toMatch(/black-forest-labs\/FLUX\.1-schnell \(Apache-2\.0\) or black-forest-labs\/FLUX\.1-dev/);
    expect(problemsOf({ modelType: 'flux1', baseModel: DEFAULT_BASE_MODELS.sdxl })[0]).toContain('set modelType to "sdxl"');
    // Negative control: the FLUX rule does not apply to the SD families.
    expect(parse({ modelType: 'sdxl', baseModel: 's3://models/xl.safetensors' }).baseModel).toBe('s3://models/xl.safetensors');
  });

  test('FLUX.1-dev is gated: it needs huggingFaceTokenSecret, by name or complete ARN', () => {
    const dev = { modelType: 'flux1', baseModel: 'black-forest-labs/FLUX.1-dev' };
    expect(problemsOf(dev)).toEqual([expect.stringMatching(/^"baseModel" = "black-forest-labs\/FLUX\.1-dev" is gated on the Hugging Face Hub: set huggingFaceTokenSecret/)]);
    expect(parse({ ...dev, huggingFaceTokenSecret: 'hf/token' }).huggingFaceTokenSecret).toBe('hf/token');
    expect(parse({ ...dev, huggingFaceTokenSecret: SECRET_ARN }).huggingFaceTokenSecret).toBe(SECRET_ARN);
    // Schnell needs none, and an S3 folder of dev's files none either (nothing is downloaded).
    expect(() => parse({ modelType: 'flux1' })).not.toThrow();
    expect(() => parse({ modelType: 'flux1', baseModel: 's3://models/flux1-dev/' })).not.toThrow();
  });

  test.each([
    ['a name with a space', 'hf token'],
    ['an ARN of another service', 'arn:aws:ssm:eu-west-1:123456789012:parameter/hf'],
    ['a partial secret ARN', 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:hf/token'],
    ['an empty name', ''],
  ])('huggingFaceTokenSecret refuses %s', (_, value) => {
    expect(problemsOf({ huggingFaceTokenSecret: value })[0]).toMatch(/^"huggingFaceTokenSecret" = .* is not allowed: expected a Secrets Manager secret's name/);
  });

  test('huggingFaceTokenSecret refuses a Hugging Face token given in place of its secret, without echoing it', () => {
    const token = `hf_${'aB3xY9'.repeat(6)}`;
    const [problem] = problemsOf({ huggingFaceTokenSecret: token });
    expect(problem).toMatch(/^"huggingFaceTokenSecret" = \(a Hugging Face token, not shown\) is not allowed: .*never the token itself/);
    expect(problem).not.toContain(token.slice(3, 20));
    // Negative control: a secret name that merely starts alike is a name.
    expect(parse({ huggingFaceTokenSecret: 'hf_token' }).huggingFaceTokenSecret).toBe('hf_token');
  });

  test('training.captionMissing is passed on only when given', () => {
    expect(parse({ 'training.captionMissing': 'false', modelType: 'flux1' }).training.captionMissing).toBe(false);
    expect(parse({ training: { captionMissing: true } }).training.captionMissing).toBe(true);
    expect('captionMissing' in parse({}).training).toBe(false);
    expect(problemsOf({ 'training.captionMissing': 'yes' })[0]).toMatch(/^"training\.captionMissing" = "yes" is not allowed: expected true or false/);
  });
});

describe('configuration table', () => {
  test('every key states its rule and description, and its default is valid', () => {
    for (const [key, spec] of Object.entries(CONFIG_FIELDS)) {
      expect([key, spec.allowed.length > 0, spec.description.length > 0]).toEqual([key, true, true]);
      if (spec.default !== undefined) expect([key, spec.schema.safeParse(spec.default).success]).toEqual([key, true]);
    }
  });
});
