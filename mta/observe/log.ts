// The relay's and operator's structured logger: pino JSON on stdout with stable keys
// (queueId, virtualMta, listener, client, user, domain, reconcileId). Level from LOG_LEVEL.
import { pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(component: string, level = process.env.LOG_LEVEL ?? 'info'): Logger {
  return pino({ name: component, level, base: { component }, timestamp: pino.stdTimeFunctions.isoTime });
}
