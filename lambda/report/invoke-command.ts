/**
 * The ready-to-paste command that generates one image from a run's endpoint: with the shared
 * endpoint it names the inference component and the exact LoRA version; a dedicated endpoint
 * serves its one fused LoRA. Names are `[A-Za-z0-9_-]` and `@`, so single quotes need no escaping.
 */
export interface InvokeTarget {
  readonly endpointName: string;
  readonly inferenceComponentName?: string;
  /** `name@version`, for the shared endpoint. */
  readonly lora?: string;
}

export function invokeCommand(target: InvokeTarget): string {
  const body = target.lora !== undefined ? `{"prompt": "...", "lora": "${target.lora}"}` : '{"prompt": "..."}';
  return [
    'aws sagemaker-runtime invoke-endpoint',
    `--endpoint-name ${target.endpointName}`,
    ...(target.inferenceComponentName !== undefined ? [`--inference-component-name ${target.inferenceComponentName}`] : []),
    '--content-type application/json --accept image/png --cli-binary-format raw-in-base64-out',
    `--body '${body}' image.png`,
  ].join(' ');
}
