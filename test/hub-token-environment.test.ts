import { hubTokenEnvironment, servingModelInputs } from '../lambda/shared/models';

/** boto3 in the containers finds a region only in AWS_DEFAULT_REGION or (as they read it) in the secret's ARN. */

const ARN = 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:hf/token-AbC123';
const DEV = 'black-forest-labs/FLUX.1-dev';

describe('the Hugging Face token environment', () => {
  test('a secret given by name comes with the region to look it up in', () => {
    expect(hubTokenEnvironment(DEV, 'hf/token', 'us-east-1')).toEqual({ HF_TOKEN_SECRET_ID: 'hf/token', AWS_DEFAULT_REGION: 'us-east-1' });
    expect(servingModelInputs('flux1', DEV, 1, { huggingFaceTokenSecretId: 'hf/token', region: 'us-east-1' }).environment).toMatchObject({
      HF_TOKEN_SECRET_ID: 'hf/token',
      AWS_DEFAULT_REGION: 'us-east-1',
    });
  });

  test("a complete ARN names its own region, which may be another: the deployment's is not forced on it", () => {
    expect(hubTokenEnvironment(DEV, ARN, 'us-east-1')).toEqual({ HF_TOKEN_SECRET_ID: ARN });
  });

  test('no secret, or an S3 base model (network-isolated): nothing at all', () => {
    expect(hubTokenEnvironment(DEV, undefined, 'us-east-1')).toEqual({});
    expect(hubTokenEnvironment('s3://models/flux/', 'hf/token', 'us-east-1')).toEqual({});
    expect(servingModelInputs('sd15', 'stable-diffusion-v1-5/stable-diffusion-v1-5', 1, { region: 'us-east-1' }).environment).toEqual({
      MODEL_TYPE: 'sd15',
      LORA_SCALE: '1',
      BASE_MODEL_ID: 'stable-diffusion-v1-5/stable-diffusion-v1-5',
    });
  });
});
