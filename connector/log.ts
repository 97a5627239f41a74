/**
 * Structured logs (pino, JSON lines on stderr) with trace categories: KVSTASH_TRACE=zmq,tiers,lmcache,events,grpc
 * (or "all") turns on debug-level lines of those categories whatever the log level; KVSTASH_LOG_LEVEL sets the level.
 */
import { pino, type Logger } from 'pino';

const traceSet = new Set((process.env.KVSTASH_TRACE ?? '').split(',').map((s) => s.trim()).filter(Boolean));

export function tracing(category: string): boolean {
  return traceSet.has('all') || traceSet.has(category);
}

let root: Logger | undefined;

export function rootLogger(level?: string): Logger {
  if (!root || (level && root.level !== level)) {
    root = pino({ name: 'kvstash', level: level ?? process.env.KVSTASH_LOG_LEVEL ?? 'info', base: { pid: process.pid } }, pino.destination(2));
  }
  return root;
}

/** A child logger for one category; `trace(msg, obj)` logs only when that category is traced. */
export function logger(category: string, level?: string): Logger & { tr: (obj: object, msg: string) => void } {
  const l = rootLogger(level).child({ cat: category }) as Logger & { tr: (obj: object, msg: string) => void };
  const on = tracing(category);
  l.tr = on ? (obj, msg) => l.info(obj, msg) : () => undefined;
  return l;
}
