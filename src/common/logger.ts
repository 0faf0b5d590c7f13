/** pino loggers for every component: JSON lines, one field "component" naming the role. */
import { pino, type Logger, type LevelWithSilent } from 'pino';

export type { Logger };

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

export function createLogger(component: string, level: LevelWithSilent = 'info', destination?: string): Logger {
  const options = { level, base: { component, pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime };
  if (destination === undefined) return pino(options);
  return pino(options, pino.destination({ dest: destination, mkdir: true, sync: false }));
}
