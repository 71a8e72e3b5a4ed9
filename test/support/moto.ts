import { spawn } from 'node:child_process';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { PYTHON, pythonModulesAvailable } from './tools';

/** Whether moto's server can run here; see {@link pythonModulesAvailable}. */
export function motoAvailable(): boolean {
  return pythonModulesAvailable(['moto.server', 'flask', 'flask_cors'], `${PYTHON} -m pip install -r test/requirements.txt`);
}

export interface MotoServer {
  /** e.g. `http://127.0.0.1:40123`, for an SDK client's `endpoint`. */
  readonly endpoint: string;
  /** Settings for an AWS SDK v3 client that talks to this server. */
  readonly clientConfig: {
    readonly endpoint: string;
    readonly region: string;
    readonly credentials: { readonly accessKeyId: string; readonly secretAccessKey: string };
    readonly forcePathStyle: boolean;
    readonly maxAttempts: number;
  };
  /** Forgets every resource created so far. */
  reset(): Promise<void>;
  /** Stops the server: SIGTERM, then SIGKILL if it has not exited within a few seconds. */
  stop(): Promise<void>;
}

const LISTENING = /Running on http:\/\/127\.0\.0\.1:(\d+)/;

/**
 * Runs moto's server so that it dies with the test process, even one killed outright: on Linux the
 * kernel sends it SIGTERM when its parent exits (PR_SET_PDEATHSIG); elsewhere the 'exit' hook below
 * is all there is.
 */
const LAUNCHER = [
  'import ctypes, runpy, signal, sys',
  'try:',
  '    ctypes.CDLL(None).prctl(1, signal.SIGTERM)',
  'except (OSError, AttributeError):',
  '    pass',
  "sys.argv = ['moto_server', '-H', '127.0.0.1', '-p', '0']",
  "runpy.run_module('moto.server', run_name='__main__')",
].join('\n');

/**
 * Starts a moto server on a port the OS picks (`-p 0`, read back from the server's own log line),
 * so parallel test workers never race for a port, and waits until it answers.
 */
export async function startMoto(timeoutMs = 30_000): Promise<MotoServer> {
  const child = spawn(PYTHON, ['-c', LAUNCHER], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, PYTHONUNBUFFERED: '1' },
  });
  // A test process that dies without stopping the server must not leave it running.
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);

  let log = '';
  let spawnError: Error | undefined;
  const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
  child.once('error', (error) => {
    spawnError = error;
  });
  const port = new Promise<number>((resolve) => {
    const keep = (chunk: Buffer) => {
      log = (log + chunk.toString()).slice(-4000);
      const match = LISTENING.exec(log);
      if (match) resolve(Number(match[1]));
    };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
  });

  const running = () => child.exitCode === null && child.signalCode === null && spawnError === undefined;
  const stop = async () => {
    process.removeListener('exit', killOnExit);
    if (running()) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
  };

  const deadline = Date.now() + timeoutMs;
  const fail = async (why: string) => {
    await stop();
    return new Error(`moto server ${why}:\n${spawnError ?? ''}${log}`);
  };
  const listening = await Promise.race([port, exited.then(() => undefined), delay(timeoutMs).then(() => undefined)]);
  if (listening === undefined) throw await fail(running() ? `did not start within ${timeoutMs} ms` : 'exited at start');

  const endpoint = `http://127.0.0.1:${listening}`;
  for (;;) {
    try {
      if ((await fetch(`${endpoint}/moto-api/`)).ok) break;
    } catch {
      // accepting connections shortly
    }
    if (!running()) throw await fail('exited at start');
    if (Date.now() > deadline) throw await fail(`did not answer on ${endpoint} within ${timeoutMs} ms`);
    await delay(100);
  }

  return {
    endpoint,
    clientConfig: {
      endpoint,
      region: 'us-east-1',
      credentials: { accessKeyId: 'testing', secretAccessKey: 'testing' },
      forcePathStyle: true,
      // The workflow's own Retry fields are under test, not the SDK's retries.
      maxAttempts: 1,
    },
    async reset() {
      const response = await fetch(`${endpoint}/moto-api/reset`, { method: 'POST' });
      if (!response.ok) throw new Error(`moto reset failed: ${response.status}`);
    },
    stop,
  };
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

/** A suite's moto server and S3 client; read them inside hooks and tests, once `beforeAll` has run. */
export interface MotoS3 {
  readonly moto: MotoServer;
  readonly s3: S3Client;
}

/**
 * Starts moto for the enclosing describe block, with an S3 client, and gives every test a fresh
 * server holding only `buckets`: the set-up the moto suites share.
 */
export function useMotoS3(buckets: readonly string[]): MotoS3 {
  const state = {} as { moto: MotoServer; s3: S3Client };
  beforeAll(async () => {
    state.moto = await startMoto();
    state.s3 = new S3Client(state.moto.clientConfig);
  });
  afterAll(async () => {
    state.s3?.destroy();
    await state.moto?.stop();
  });
  beforeEach(async () => {
    await state.moto.reset();
    for (const bucket of buckets) await state.s3.send(new CreateBucketCommand({ Bucket: bucket }));
  });
  return state;
}
