/**
 * Calls between the benchmark and its child processes (the simulator hosts, the MDM's probe)
 * over Node's IPC channel: a request carries an id, a method and its parameters; the answer
 * carries the same id and a result or an error message. Advanced serialization, so typed arrays
 * (chunk holdings) travel without JSON.
 */
import { fork, type ChildProcess } from 'node:child_process';

export interface RpcRequest {
  readonly rpc: 'call';
  readonly id: number;
  readonly method: string;
  readonly params: unknown;
}

export interface RpcReply {
  readonly rpc: 'reply';
  readonly id: number;
  readonly ok: boolean;
  readonly result?: unknown;
  readonly error?: string;
}

/** Every child process the benchmark started and that has not exited: stopped by PID on a signal. */
export const liveChildren = new Set<ChildProcess>();

export function trackChild(child: ChildProcess): void {
  liveChildren.add(child);
  child.once('exit', () => liveChildren.delete(child));
}

export type RpcHandlers = Record<string, (params: never) => Promise<unknown> | unknown>;

function isRequest(message: unknown): message is RpcRequest {
  return typeof message === 'object' && message !== null && (message as { rpc?: unknown }).rpc === 'call';
}

function isReply(message: unknown): message is RpcReply {
  return typeof message === 'object' && message !== null && (message as { rpc?: unknown }).rpc === 'reply';
}

/** In a child: answers the parent's calls with `handlers`. Unknown methods and throws become errors. */
export function serveRpc(handlers: RpcHandlers): void {
  if (process.send === undefined) throw new Error('serveRpc: this process has no IPC channel (start it with fork)');
  process.on('message', (message: unknown) => {
    if (!isRequest(message)) return;
    const reply = (answer: Omit<RpcReply, 'rpc' | 'id'>): void => {
      process.send?.({ rpc: 'reply', id: message.id, ...answer } satisfies RpcReply);
    };
    const handler = handlers[message.method];
    if (handler === undefined) {
      reply({ ok: false, error: `unknown method ${message.method}` });
      return;
    }
    Promise.resolve()
      .then(() => handler(message.params as never))
      .then(
        (result) => reply({ ok: true, result }),
        (error: unknown) => reply({ ok: false, error: error instanceof Error ? `${error.message}\n${error.stack ?? ''}` : String(error) }),
      );
  });
}

/** The parent's end of an RPC channel to one child process. */
export class RpcChannel {
  private nextId = 1;
  private readonly waiting = new Map<number, { resolve: (value: unknown) => void; reject: (error: Error) => void; timer: NodeJS.Timeout }>();
  private exitError: Error | undefined;

  constructor(
    readonly name: string,
    readonly child: ChildProcess,
  ) {
    child.on('message', (message: unknown) => {
      if (!isReply(message)) return;
      const waiter = this.waiting.get(message.id);
      if (waiter === undefined) return;
      this.waiting.delete(message.id);
      clearTimeout(waiter.timer);
      if (message.ok) waiter.resolve(message.result);
      else waiter.reject(new Error(`${name}: ${message.error ?? 'failed'}`));
    });
    child.on('exit', (code, signal) => {
      this.exitError = new Error(`${name} exited (code ${code}, signal ${signal})`);
      for (const [id, waiter] of this.waiting) {
        clearTimeout(waiter.timer);
        waiter.reject(this.exitError);
        this.waiting.delete(id);
      }
    });
  }

  get exited(): boolean {
    return this.exitError !== undefined;
  }

  call<T>(method: string, params: unknown, timeoutMs: number): Promise<T> {
    if (this.exitError !== undefined) return Promise.reject(this.exitError);
    const id = this.nextId;
    this.nextId += 1;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        reject(new Error(`${this.name}: ${method} got no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiting.set(id, { resolve: resolve as (value: unknown) => void, reject, timer });
      this.child.send({ rpc: 'call', id, method, params } satisfies RpcRequest);
    });
  }
}

/** Forks a simulator host (a compiled module of scripts/mdm-sim) with an RPC channel. */
export function forkHost(name: string, modulePath: string, execArgv: readonly string[] = []): RpcChannel {
  const child = fork(modulePath, [], { serialization: 'advanced', stdio: ['ignore', 'inherit', 'inherit', 'ipc'], execArgv: [...execArgv] });
  trackChild(child);
  return new RpcChannel(name, child);
}

/** Stops a child by its PID: SIGTERM, then SIGKILL after `graceMs`. Resolves once it exited. */
export async function stopChild(child: ChildProcess, graceMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }, graceMs);
  await exited;
  clearTimeout(timer);
}
