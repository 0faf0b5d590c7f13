/** Running a component in the foreground: stop it cleanly on SIGINT or SIGTERM, then exit. */
import type { Logger } from '../common/logger.js';

export function stopOnSignals(log: Logger, component: { close(): Promise<void> }): void {
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'stopping');
    component.close().then(
      () => process.exit(0),
      (error: unknown) => {
        log.error({ err: error }, 'error while stopping');
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
}
