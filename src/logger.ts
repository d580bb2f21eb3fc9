/**
 * The service logger: pino, JSON lines. Anything that could carry a token or key material is redacted by
 * path, and the request serializer copies an allowlist of fields (never headers or bodies).
 */
import { pino, type DestinationStream, type Logger, type LoggerOptions } from 'pino'
import type { LogLevel } from './config.js'

export const REDACT_PATHS = [
  'access_token',
  '*.access_token',
  'token',
  '*.token',
  'authorization',
  '*.authorization',
  'headers.authorization',
  '*.headers.authorization',
  'headers["x-service-token"]',
  '*.headers["x-service-token"]',
  'headers.cookie',
  '*.headers.cookie',
  'privateKey',
  '*.privateKey',
  'passphrase',
  '*.passphrase',
  'key',
  '*.key',
  'body',
  '*.body',
]

export function loggerOptions(level: LogLevel): LoggerOptions {
  return {
    level,
    base: { service: 'authz' },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    serializers: {
      req: (req: { method?: string; url?: string; id?: string }) => ({ id: req.id, method: req.method, url: req.url }),
    },
  }
}

export function createLogger(level: LogLevel, destination?: DestinationStream): Logger {
  return destination === undefined ? pino(loggerOptions(level)) : pino(loggerOptions(level), destination)
}
