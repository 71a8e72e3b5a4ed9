import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import * as net from 'node:net';
import { PYTHON, pythonModulesAvailable } from './tools';

/** The server process ended before it answered (e.g. another process took its port first). */
class MotoExitedError extends Error {}

/** Whether moto's server can run here; see {@link pythonModulesAvailable}. */
export function motoAvailable(): boolean {
  return pythonModulesAvailable(['moto.server', 'flask', 'flask_cors'], `${PYTHON} -m pip install 'moto[server]'`);
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
  };
  /** Forgets every resource created so far. */
  reset(): Promise<void>;
  stop(): Promise<void>;
}

async function freeLoopbackPort(): Promise<number> {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as net.AddressInfo;
  server.close();
  await once(server, 'close');
  return port;
}

async function waitUntilServing(endpoint: string, child: ChildProcess, output: () => string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new MotoExitedError(`moto server exited with ${child.exitCode}:\n${output()}`);
    try {
      const response = await fetch(`${endpoint}/moto-api/`);
      if (response.ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`moto server did not answer on ${endpoint} within ${timeoutMs} ms:\n${output()}`);
}

/**
 * Starts a moto server on a free loopback port and waits until it answers. The port is free when
 * chosen but could be taken before moto binds it, so a server that exits at start is tried again.
 */
export async function startMoto(timeoutMs = 30_000, attempts = 3): Promise<MotoServer> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startMotoOnce(timeoutMs);
    } catch (error) {
      if (attempt >= attempts || !(error instanceof MotoExitedError)) throw error;
    }
  }
}

async function startMotoOnce(timeoutMs: number): Promise<MotoServer> {
  const port = await freeLoopbackPort();
  const endpoint = `http://127.0.0.1:${port}`;
  const child = spawn(PYTHON, ['-m', 'moto.server', '-H', '127.0.0.1', '-p', String(port)], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, PYTHONUNBUFFERED: '1' },
  });
  let log = '';
  const keep = (chunk: Buffer) => {
    log = (log + chunk.toString()).slice(-4000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));

  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    await exited;
  };
  try {
    await waitUntilServing(endpoint, child, () => log, timeoutMs);
  } catch (error) {
    await stop();
    throw error;
  }
  return {
    endpoint,
    clientConfig: {
      endpoint,
      region: 'us-east-1',
      credentials: { accessKeyId: 'testing', secretAccessKey: 'testing' },
      forcePathStyle: true,
    },
    async reset() {
      const response = await fetch(`${endpoint}/moto-api/reset`, { method: 'POST' });
      if (!response.ok) throw new Error(`moto reset failed: ${response.status}`);
    },
    stop,
  };
}
