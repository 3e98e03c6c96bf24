/**
 * Boundaries: every entry point the outside world can reach (an HTTP request,
 * an upgrade, a WebSocket frame, a notification, a timer) runs inside one, so
 * a throw or a rejected promise becomes a logged error and a clean refusal
 * for that one caller, never the end of the process.
 */
import type { Logger } from 'pino';

export function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * Wraps a handler: a synchronous throw or a rejection is logged with `where`
 * and handed to `onError` (with the handler's own arguments), which refuses
 * the caller. A throw from `onError` itself is logged too.
 */
export function guard<A extends unknown[]>(
  logger: Pick<Logger, 'error'>,
  where: string,
  fn: (...args: A) => unknown,
  onError?: (err: unknown, ...args: A) => void,
): (...args: A) => void {
  return (...args: A): void => {
    const fail = (err: unknown): void => {
      logger.error({ err: errorText(err), where }, 'handler failed');
      if (!onError) return;
      try {
        onError(err, ...args);
      } catch (again) {
        logger.error({ err: errorText(again), where }, 'refusing after a failed handler failed too');
      }
    };
    try {
      const result = fn(...args);
      if (result instanceof Promise) result.catch(fail);
    } catch (err) {
      fail(err);
    }
  };
}

/**
 * The path and query of a request target, or null when it is not one an
 * origin server takes (`//x`, `http://[`, `*`): `new URL` throws on those.
 */
export function requestTarget(raw: string | undefined): { pathname: string; searchParams: URLSearchParams } | null {
  const target = raw ?? '/';
  if (!target.startsWith('/') || target.startsWith('//')) return null;
  try {
    const url = new URL(target, 'http://localhost');
    return { pathname: url.pathname, searchParams: url.searchParams };
  } catch {
    return null;
  }
}
