import { shortHash } from '../shared/names';

/**
 * Whether a SageMaker instance type has local NVMe instance storage. SageMaker refuses a KMS key for
 * such a type's storage: CreateTrainingJob's ResourceConfig.VolumeKmsKeyId and
 * CreateEndpointConfig's KmsKeyId ("Certain Nitro-based instances include local storage, dependent
 * on the instance type. Local storage volumes are encrypted using a hardware module on the instance.
 * You can't request a VolumeKmsKeyId when using an instance type with local storage." —
 * https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_ResourceConfig.html and
 * https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_CreateEndpointConfig.html), and
 * lists the types in https://docs.aws.amazon.com/sagemaker/latest/dg/host-instance-storage.html.
 *
 * Of the GPU families (ml.g*, ml.p*), only ml.p2 and ml.p3 other than ml.p3dn use EBS alone; every
 * other one (g4dn, g5, g6, g6e, p3dn, p4d, p4de, p5, …) has instance storage. An unknown new family
 * is taken to have it too: a job without the key still has its storage encrypted by the hardware,
 * while a key SageMaker refuses fails the run.
 */
export function hasInstanceStorage(instanceType: string): boolean {
  return !/^ml\.p2\.[a-z0-9]+$/.test(instanceType) && !/^ml\.p3\.(2|8|16)xlarge$/.test(instanceType);
}

/** SageMaker's tag value rule (Tag.Value): letters, separators, digits and `_.:/=+-@`, at most 256. */
const TAG_VALUE_CHARACTER = /[\p{L}\p{Z}\p{N}_.:/=+\-@]/u;
const MAX_TAG_VALUE = 256;

/**
 * `text` as a valid tag value: other characters become `_`, and a value that had to be changed or
 * cut ends with a hash of the original, so two folders never share a tag value.
 */
export function tagValue(text: string): string {
  const characters = Array.from(text);
  const cleaned = characters.map((c) => (TAG_VALUE_CHARACTER.test(c) ? c : '_'));
  const changed = cleaned.some((c, i) => c !== characters[i]);
  if (!changed && cleaned.length <= MAX_TAG_VALUE) return text;
  const hash = shortHash(text, 8);
  return `${cleaned.slice(0, MAX_TAG_VALUE - hash.length - 1).join('')}-${hash}`;
}
