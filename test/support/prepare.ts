import type { PrepareSettings } from '../../lambda/shared/contract';
import { DEFAULT_BASE_MODELS } from '../../lambda/shared/models';

/** Deploy-time settings of the Prepare function as the stack would write them, for its tests. */
export const PREPARE_SETTINGS: PrepareSettings = {
  datasetsBucket: 'lora-datasets',
  datasetPrefix: 'datasets/',
  triggerFileName: 'dataset.toml',
  settleSeconds: 60,
  maxSettleWaitSeconds: 3600,
  namePrefix: 'lora',
  modelType: 'sd15',
  baseModel: DEFAULT_BASE_MODELS.sd15,
  training: { instanceType: 'ml.g4dn.xlarge', spot: true, maxRuntimeSeconds: 3600, maxWaitSeconds: 7200, volumeSizeGb: 50 },
  endpoint: { mode: 'dedicated', instanceType: 'ml.g4dn.xlarge', instanceCount: 1, startupHealthCheckTimeoutSeconds: 1200, modelDataDownloadTimeoutSeconds: 1200, loraScale: 1 },
  keyArn: 'arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab',
  checkpointExpirationDays: 7,
  pipeline: 'SageMakerLoraPipeline',
};
