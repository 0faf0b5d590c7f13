/**
 * What every registering node (SDS, SDC) shares: its saved identity (node.json, 0600, in its data
 * dir), registration with the MDM by that credential and, when the MDM no longer knows it, by
 * the join token; and listening a fastify plane on a port that may be 0.
 */
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { HttpClient, HttpClientError } from './http-client.js';

export const NODE_FILE = 'node.json';
/** How soon a node that could not register tries again. */
export const REGISTER_RETRY_MS = 2000;
/** Bounds of a heartbeat's own timeout (one heartbeat interval). */
export const HEARTBEAT_TIMEOUT_MS_MIN = 500;
export const HEARTBEAT_TIMEOUT_MS_MAX = 10_000;

/**
 * A heartbeat waits at most one interval for its answer, and one that timed out is followed by
 * the next at once (on a new connection: the old one is dropped). With the client's 10 s timeout
 * a single exchange that stalled outlasted the MDM's whole miss window (3 × 2 s): the 4 TiB
 * benchmark saw healthy SDS marked DOWN and fenced because one heartbeat hung while the ones
 * around it took under a second.
 */
export function heartbeatTimeoutMs(intervalMs: number): number {
  return Math.min(HEARTBEAT_TIMEOUT_MS_MAX, Math.max(HEARTBEAT_TIMEOUT_MS_MIN, intervalMs));
}

/** When the next heartbeat goes: an interval after an answer or a refusal, at once after a timeout. */
export function nextHeartbeatDelayMs(intervalMs: number, error: unknown): number {
  return error instanceof HttpClientError && error.code === 'PFLEX_ERR_TIMEOUT' ? 0 : intervalMs;
}

export function readNodeFile<T>(dataDir: string): T | undefined {
  const path = join(dataDir, NODE_FILE);
  return existsSync(path) ? (JSON.parse(readFileSync(path, 'utf8')) as T) : undefined;
}

export function writeNodeFile(dataDir: string, node: unknown): void {
  const path = join(dataDir, NODE_FILE);
  writeFileSync(path, `${JSON.stringify(node, null, 2)}\n`, { mode: 0o600 });
  chmodSync(path, 0o600);
}

/**
 * POST /discovery/register with the saved credential; if there is none or the MDM refuses it
 * (401: its database was reset, or the node was removed), with the join token instead.
 */
export async function registerWithMdm<T>(mdmUrl: string, credential: string | undefined, joinToken: string | undefined, body: Record<string, unknown>): Promise<T> {
  try {
    if (credential === undefined) throw new HttpClientError('no saved credential', 'NO_CREDENTIAL', 401);
    return await new HttpClient({ baseUrl: mdmUrl, credential }).post<T>('/discovery/register', body);
  } catch (error) {
    const refused = error instanceof HttpClientError && error.status === 401;
    if (!refused || joinToken === undefined) throw error;
    return new HttpClient({ baseUrl: mdmUrl }).post<T>('/discovery/register', { ...body, join_token: joinToken });
  }
}

/** Listens and returns the port actually bound (the one asked for, or the kernel's pick for 0). */
export async function listenOn(app: FastifyInstance, host: string, port: number): Promise<number> {
  await app.listen({ host, port });
  const address = app.server.address();
  return typeof address === 'object' && address !== null ? address.port : port;
}
