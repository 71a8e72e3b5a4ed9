import { SageMakerClient } from '@aws-sdk/client-sagemaker';
import { SFNClient } from '@aws-sdk/client-sfn';
import { log } from '../shared/log';
import { type RunList, type RunStatus, status } from './status';

// Created once per container, so warm invocations reuse their connections.
const sfn = new SFNClient({});
const sagemaker = new SageMakerClient({});

export async function handler(event: unknown): Promise<RunStatus | RunList> {
  const stateMachineArn = process.env.STATE_MACHINE_ARN;
  if (!stateMachineArn) throw new Error('STATE_MACHINE_ARN is not set: the stack sets it to the workflow this function reports on.');
  try {
    return await status(event, { stateMachineArn, sfn, sagemaker });
  } catch (error) {
    log('WARN', 'Status request not answered', { error: error instanceof Error ? error.name : String(error) });
    throw error;
  }
}
