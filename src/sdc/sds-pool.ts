/**
 * Persistent pipelined connections from this SDC to each SDS data port (DESIGN §5.3, §10): a few
 * connections per SDS, the least busy picked per request, and the tokens each SDS already holds,
 * so a token travels to an SDS once, not with every request.
 */
import { existsSync } from 'node:fs';
import { SdsDataClient, type RequestFields, type SdsReply } from '../common/sds-client.js';
import { Opcode, Status } from '../common/sds-protocol.js';
import type { Lease } from './token-leases.js';

/** One connection per SDS: a single-threaded SDC gains nothing from more, and one socket batches better. */
export const CONNECTIONS_PER_SDS = 1;
/** A request an SDS has not answered by then counts as a failure (the kernel NBD client waits 30 s). */
export const SDS_REQUEST_TIMEOUT_MS = 8000;
const LOOPBACK_HOSTS = new Set(['127.0.0.1', 'localhost', '::1']);
const INSTALLED_TOKENS_MAX = 4096;

export class SdsEndpoint {
  private readonly clients: SdsDataClient[] = [];
  private readonly installed = new Set<string>();
  private readonly installing = new Map<string, Promise<void>>();

  constructor(
    readonly host: string,
    readonly port: number,
    socketPath: string | undefined,
  ) {
    // HELLO on every connection: a request given up on (timed out, its connection dropped) can
    // then never apply after its retry on a new connection.
    for (let i = 0; i < CONNECTIONS_PER_SDS; i += 1) this.clients.push(new SdsDataClient(host, port, SDS_REQUEST_TIMEOUT_MS, socketPath, true));
  }

  get inFlight(): number {
    return this.clients.reduce((sum, client) => sum + client.inFlight, 0);
  }

  /** Grows whenever a connection to this SDS is made again: what it acknowledged before may be gone. */
  get generation(): number {
    return this.clients.reduce((sum, client) => sum + client.generation, 0);
  }

  private pick(): SdsDataClient {
    let best = this.clients[0]!;
    for (const client of this.clients) if (client.inFlight < best.inFlight) best = client;
    return best;
  }

  /**
   * Sends a request under a lease, installing the lease's token first when this SDS lacks it.
   * The lease's token id and next sequence number are stamped onto `fields` (one object per request).
   */
  send(lease: Lease, fields: RequestFields, payload: Buffer | undefined): Promise<SdsReply> {
    // Fast path (every request but a token's first): no extra await, one promise.
    if (this.installed.has(lease.tokenIdHex)) {
      return this.sendOnce(lease, fields, payload).then((reply) => (reply.status === Status.TOKEN_UNKNOWN ? this.sendInstalling(lease, fields, payload) : reply));
    }
    return this.sendInstalling(lease, fields, payload);
  }

  private sendOnce(lease: Lease, fields: RequestFields, payload: Buffer | undefined): Promise<SdsReply> {
    fields.tokenId = lease.tokenId;
    fields.seq = lease.nextSeq;
    lease.nextSeq += 1n;
    return this.pick().request(fields, payload, lease.sessionKey);
  }

  /** The SDS lacks the token (first use, or it restarted): install, then send; once more if needed. */
  private async sendInstalling(lease: Lease, fields: RequestFields, payload: Buffer | undefined): Promise<SdsReply> {
    for (let attempt = 0; attempt < 2; attempt += 1) {
      if (attempt > 0 || this.installed.has(lease.tokenIdHex)) this.installed.delete(lease.tokenIdHex);
      await this.ensureToken(lease);
      const reply = await this.sendOnce(lease, fields, payload);
      if (reply.status !== Status.TOKEN_UNKNOWN) return reply;
    }
    return { status: Status.TOKEN_UNKNOWN, aux: 0, payload: undefined };
  }

  private async ensureToken(lease: Lease): Promise<void> {
    if (this.installed.has(lease.tokenIdHex)) return;
    let pending = this.installing.get(lease.tokenIdHex);
    if (pending === undefined) {
      pending = (async () => {
        const reply = await this.pick().request(
          {
            opcode: Opcode.TOKEN,
            flags: 0,
            tokenId: lease.tokenId,
            seq: 0n,
            volumeId: 0,
            chunkIndex: 0,
            epoch: 0,
            offsetBytes: 0,
            lengthBytes: 0,
          },
          lease.token,
          undefined,
        );
        if (reply.status !== Status.OK) throw new TokenRefusedError(reply.status);
        if (this.installed.size >= INSTALLED_TOKENS_MAX) this.installed.clear();
        this.installed.add(lease.tokenIdHex);
      })();
      this.installing.set(lease.tokenIdHex, pending);
      pending.finally(() => this.installing.delete(lease.tokenIdHex)).catch(() => undefined);
    }
    await pending;
  }

  close(): void {
    for (const client of this.clients) client.close();
  }
}

/** The SDS refused a token at install: the caller re-plans (expired, bad signature…). */
export class TokenRefusedError extends Error {
  constructor(readonly status: number) {
    super(`token refused with status ${status}`);
    this.name = 'TokenRefusedError';
  }
}

export class SdsPool {
  /** By port, then host: no key string built per request. */
  private readonly endpoints = new Map<number, Map<string, SdsEndpoint>>();

  /**
   * The connection to an SDS. An SDS on this host (a loopback address) that also listens on a Unix
   * socket is reached there: same protocol, no TCP stack, less CPU per request.
   */
  endpoint(host: string, port: number, socketPath?: string): SdsEndpoint {
    let byHost = this.endpoints.get(port);
    if (byHost === undefined) {
      byHost = new Map();
      this.endpoints.set(port, byHost);
    }
    let endpoint = byHost.get(host);
    if (endpoint === undefined) {
      const local = socketPath !== undefined && LOOPBACK_HOSTS.has(host) && existsSync(socketPath) ? socketPath : undefined;
      endpoint = new SdsEndpoint(host, port, local);
      byHost.set(host, endpoint);
    }
    return endpoint;
  }

  /** The endpoint for "host:port", if one was made. */
  endpointByKey(key: string): SdsEndpoint | undefined {
    const colon = key.lastIndexOf(':');
    return this.endpoints.get(Number(key.slice(colon + 1)))?.get(key.slice(0, colon));
  }

  close(): void {
    for (const byHost of this.endpoints.values()) for (const endpoint of byHost.values()) endpoint.close();
    this.endpoints.clear();
  }
}
