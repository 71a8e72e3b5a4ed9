import { S3Client } from '@aws-sdk/client-s3';
import { createHandler } from './handler';
import { parseSettings } from './settings';

// Cold start: bad settings fail every invocation with what is wrong, before any run is looked at.
const settings = parseSettings(process.env.SETTINGS);
const s3 = new S3Client({});

/** Prepare step of the workflow: `PrepareEvent` in, `PrepareResult` out (lambda/shared/contract.ts). */
export const handler = createHandler({ s3, settings });
