/** The webhook outbox: realtime.claim_webhook_deliveries and record_webhook_attempts. */
import type pg from 'pg';

export interface ClaimedDelivery {
  id: string;
  url: string;
  attempt: number;
  message_id: string;
  channel: string;
  event: string;
  body: string;
}

export interface WebhookAttempt {
  id: string;
  status: number | null;
  error: string | null;
  duration_ms: number;
  retry_after_ms: number | null;
}

export function webhookQueries(pool: pg.Pool) {
  return {
    /** Claims up to maxCount due deliveries (SKIP LOCKED, leased), at most perUrl per URL, none for busy URLs. */
    async claimWebhookDeliveries(maxCount: number, perUrl: number, busyUrls: string[], lease: string): Promise<ClaimedDelivery[]> {
      const { rows } = await pool.query<ClaimedDelivery>({
        name: 'realtimed_claim_webhook_deliveries',
        text: `select id, url, attempt, message_id, channel, event, body
               from realtime.claim_webhook_deliveries($1, $2, $3, $4::interval)`,
        values: [maxCount, perUrl, busyUrls, lease],
      });
      return rows;
    },

    /** Records a batch of attempts; retries, backoff and statistics are SQL's. */
    async recordWebhookAttempts(attempts: WebhookAttempt[]): Promise<void> {
      await pool.query({
        name: 'realtimed_record_webhook_attempts',
        text: 'select realtime.record_webhook_attempts($1::jsonb)',
        values: [JSON.stringify(attempts)],
      });
    },
  };
}
