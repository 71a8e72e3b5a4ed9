import { SFNClient, StartExecutionCommand } from '@aws-sdk/client-sfn';
import type { S3Event } from 'aws-lambda';
import { kickoff, settingsFromEnvironment, type Summary } from './kickoff';

const settings = settingsFromEnvironment(process.env);
const sfn = new SFNClient({});

export async function handler(event: S3Event): Promise<Summary> {
  return kickoff(event, settings, (request) => sfn.send(new StartExecutionCommand(request)));
}
