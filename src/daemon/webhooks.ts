/**
 * POSTs system messages to their channels' webhook URLs from the durable
 * outbox (realtime.webhook_deliveries). Claims are FOR UPDATE SKIP LOCKED
 * with a lease, so several instances never send the same attempt twice and a
 * dead instance's claims come back; the retry policy is SQL's
 * (realtime.record_webhook_attempts). Woken by NOTIFY realtime_webhooks, with
 * a periodic sweep for retries that fall due.
 */
import { createHmac } from 'node:crypto';

import type { Logger } from 'pino';
import { Agent, request } from 'undici';

import type { Db } from '../db/index.js';
import type { ClaimedDelivery, WebhookAttempt } from '../db/webhooks.js';
import { errorText } from './boundary.js';
import type { Metrics } from './metrics.js';
import { BLOCKED, isBlockedUrl, lookupAllowed } from './webhookAddress.js';

export interface WebhookOptions {
  /** HMAC-SHA256 key for X-Realtime-Signature; unsigned when undefined. */
  secret: string | undefined;
  timeoutMs: number;
  /** Requests in flight to one URL from this instance. */
  perUrl: number;
  /** Requests in flight from this instance. */
  maxInFlight: number;
  sweepMs: number;
  userAgent: string;
  /** Let webhooks reach loopback and link-local addresses (development, tests). */
  allowLocal: boolean;
}

export interface Webhooks {
  start(): void;
  /** A NOTIFY said new deliveries may be due. */
  wake(): void;
  stop(): Promise<void>;
}

/** `X-Realtime-Signature: v1=<hex HMAC-SHA256 of "<timestamp>.<body>">` (docs/webhooks.md). */
export function sign(secret: string, timestamp: string, body: string): string {
  return `v1=${createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex')}`;
}

/**
 * `X-Realtime-Signature-V2: v2=<hex HMAC-SHA256 of "<timestamp>.<url>.<body>">`:
 * also covers the URL it was sent to, so a request one receiver got cannot be
 * replayed to another that shares the secret.
 */
export function signV2(secret: string, timestamp: string, url: string, body: string): string {
  return `v2=${createHmac('sha256', secret).update(`${timestamp}.${url}.${body}`).digest('hex')}`;
}

/** Header values are Latin-1: anything outside printable ASCII is percent-encoded. */
function headerValue(text: string): string {
  return text.replace(/[^\x20-\x7e]/gu, (c) => encodeURIComponent(c));
}

/** Retry-After in milliseconds: delta-seconds or an HTTP date. */
export function retryAfterMs(value: string | string[] | undefined, now: number): number | null {
  const text = Array.isArray(value) ? value[0] : value;
  if (text === undefined || text.trim() === '') return null;
  if (/^\d+$/.test(text.trim())) return Number(text.trim()) * 1000;
  const date = Date.parse(text);
  return Number.isNaN(date) ? null : Math.max(0, date - now);
}

export function createWebhooks(
  deps: { db: Pick<Db, 'claimWebhookDeliveries' | 'recordWebhookAttempts'>; logger: Logger; metrics: Metrics; now: () => number },
  options: WebhookOptions,
): Webhooks {
  const { db, logger, metrics, now } = deps;
  const agent = new Agent({
    keepAliveTimeout: 30_000,
    connections: options.perUrl,
    ...(options.allowLocal ? {} : { connect: { lookup: lookupAllowed } }),
  });
  // A claim outlives the slowest attempt, so no other instance takes it meanwhile.
  const lease = `${options.timeoutMs + 30_000} milliseconds`;
  const inFlightByUrl = new Map<string, number>();
  const done: WebhookAttempt[] = [];
  const running = new Set<Promise<void>>();
  let inFlight = 0;
  let claiming = false;
  let again = false;
  let stopped = true;
  let sweep: NodeJS.Timeout | undefined;
  let flushTimer: NodeJS.Timeout | undefined;
  let flushing: Promise<void> | null = null;

  const flush = async (): Promise<void> => {
    const batch = done.splice(0);
    if (batch.length === 0) return;
    try {
      await db.recordWebhookAttempts(batch);
    } catch (err) {
      // Not recorded yet: keep them. If this instance dies first, the lease runs out and they are retried.
      done.unshift(...batch);
      logger.error({ err: errorText(err), attempts: batch.length }, 'could not record webhook attempts');
      flushTimer = setTimeout(() => {
        flushTimer = undefined;
        scheduleFlush();
      }, 1000);
    }
  };
  const scheduleFlush = (): void => {
    // Attempts that finish in the same turn are recorded in one statement.
    flushing ??= new Promise<void>((resolve) => setImmediate(resolve))
      .then(flush)
      .finally(() => {
        flushing = null;
        if (done.length > 0 && !flushTimer) scheduleFlush();
      });
  };

  const deliver = async (row: ClaimedDelivery): Promise<void> => {
    const started = performance.now();
    const timestamp = String(Math.floor(now() / 1000));
    const headers: Record<string, string> = {
      'content-type': 'application/json',
      'user-agent': options.userAgent,
      'x-realtime-event': headerValue(row.event),
      'x-realtime-channel': headerValue(row.channel),
      'x-realtime-message-id': row.message_id,
      'x-realtime-timestamp': timestamp,
      'x-realtime-delivery': `${row.id}/${row.attempt}`,
    };
    if (options.secret !== undefined) {
      headers['x-realtime-signature'] = sign(options.secret, timestamp, row.body);
      headers['x-realtime-signature-v2'] = signV2(options.secret, timestamp, row.url, row.body);
    }
    let status: number | null = null;
    let error: string | null = null;
    let retryAfter: number | null = null;
    try {
      if (!options.allowLocal && isBlockedUrl(row.url)) throw Object.assign(new Error(BLOCKED), { code: 'EBLOCKED' });
      const res = await request(row.url, {
        method: 'POST',
        headers,
        body: row.body,
        dispatcher: agent,
        signal: AbortSignal.timeout(options.timeoutMs),
      });
      status = res.statusCode;
      if (status === 429 || status >= 500) retryAfter = retryAfterMs(res.headers['retry-after'], now());
      if (status < 200 || status > 299) error = `HTTP ${status}`;
      await res.body.dump();
    } catch (err) {
      const e = err as { name?: string; code?: string; message?: string };
      error =
        e.name === 'TimeoutError' || e.name === 'AbortError'
          ? `timeout after ${options.timeoutMs} ms`
          : e.code === 'EBLOCKED'
            ? BLOCKED
            : (e.code ?? e.message ?? 'error');
    }
    const duration = performance.now() - started;
    metrics.webhookAttempts.inc({ result: status === null ? 'error' : `${Math.floor(status / 100)}xx` });
    metrics.webhookSeconds.observe(duration / 1000);
    done.push({ id: row.id, status, error, duration_ms: Math.round(duration), retry_after_ms: retryAfter });
    scheduleFlush();
  };

  const start = (row: ClaimedDelivery): void => {
    inFlight++;
    inFlightByUrl.set(row.url, (inFlightByUrl.get(row.url) ?? 0) + 1);
    const task: Promise<void> = deliver(row).finally(() => {
      inFlight--;
      const left = (inFlightByUrl.get(row.url) ?? 1) - 1;
      if (left === 0) inFlightByUrl.delete(row.url);
      else inFlightByUrl.set(row.url, left);
      running.delete(task);
      wake();
    });
    running.add(task);
  };

  const claim = async (): Promise<void> => {
    const free = options.maxInFlight - inFlight;
    if (stopped || free <= 0) return;
    const busy = [...inFlightByUrl].filter(([, n]) => n >= options.perUrl).map(([url]) => url);
    const rows = await db.claimWebhookDeliveries(free, options.perUrl, busy, lease);
    for (const row of rows) start(row);
    if (rows.length === free) again = true;
  };

  const wake = (): void => {
    if (stopped) return;
    if (claiming) {
      again = true;
      return;
    }
    claiming = true;
    again = false;
    claim()
      .catch((err: unknown) => logger.error({ err: errorText(err) }, 'could not claim webhook deliveries'))
      .finally(() => {
        claiming = false;
        if (again) wake();
      });
  };

  return {
    start() {
      stopped = false;
      sweep = setInterval(wake, options.sweepMs);
      sweep.unref();
      wake();
    },
    wake,
    async stop() {
      stopped = true;
      clearInterval(sweep);
      clearTimeout(flushTimer);
      await Promise.allSettled([...running]);
      while (flushing) await flushing;
      await flush();
      await agent.close();
    },
  };
}
