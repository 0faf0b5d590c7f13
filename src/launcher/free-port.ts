/** Free TCP ports on loopback, so tests and scenarios run beside a live cluster on the default ports. */
import { createServer } from 'node:net';

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** True when nothing listens on 127.0.0.1:`port`. */
export function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.unref();
    server.on('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

/** Below the kernel's ephemeral range (32768+), so outgoing connections do not take them meanwhile. */
const PORT_RANGE_FIRST = 20_000;
const PORT_RANGE_LAST = 32_767;
const PORT_RANGE_ATTEMPTS_MAX = 50;

/** The first of `count` consecutive free ports (for PFLEX_LOCAL_PORT_BASE), from a random start. */
export async function freePortRange(count: number): Promise<number> {
  for (let attempt = 0; attempt < PORT_RANGE_ATTEMPTS_MAX; attempt += 1) {
    const base = PORT_RANGE_FIRST + Math.floor(Math.random() * (PORT_RANGE_LAST - PORT_RANGE_FIRST - count));
    let free = true;
    for (let port = base; port < base + count && free; port += 1) free = await portFree(port);
    if (free) return base;
  }
  throw new Error(`no ${count} consecutive free ports between ${PORT_RANGE_FIRST} and ${PORT_RANGE_LAST} after ${PORT_RANGE_ATTEMPTS_MAX} tries`);
}
