/** `realtimed stats`: realtime.channel_stats as a plain text table. */
import type { Command } from 'commander';
import pg from 'pg';

import { channelStatsTable } from '../db/stats.js';
import { parseDatabaseUrl } from '../db/url.js';
import { fromPgError } from './errors.js';
import type { CliIo } from './io.js';

/** A plain text table, columns padded to their widest cell. */
export function formatTable(rows: Record<string, string | null>[]): string {
  if (rows.length === 0) return '(no channels)\n';
  const columns = Object.keys(rows[0] ?? {});
  const cells = rows.map((row) => columns.map((c) => row[c] ?? '-'));
  const widths = columns.map((c, i) => Math.max(c.length, ...cells.map((r) => (r[i] ?? '').length)));
  const line = (values: string[]): string => values.map((v, i) => v.padEnd(widths[i] ?? 0)).join('  ').trimEnd();
  return [line(columns), line(widths.map((w) => '-'.repeat(w))), ...cells.map(line)].join('\n') + '\n';
}

export function addStatsCommand(program: Command, io: CliIo): void {
  program
    .command('stats')
    .description('Print realtime.channel_stats: messages, audiences, webhook success per channel.')
    .option('--database-url <url>', 'PostgreSQL connection URL (default: $DATABASE_URL)')
    .action(async (opts: { databaseUrl?: string }) => {
      const target = parseDatabaseUrl(opts.databaseUrl ?? io.env['DATABASE_URL'], opts.databaseUrl === undefined ? 'DATABASE_URL' : '--database-url');
      const client = new pg.Client({ connectionString: target.url, connectionTimeoutMillis: 10_000 });
      client.on('error', () => {});
      try {
        await client.connect();
        io.out(formatTable(await channelStatsTable(client)));
      } catch (err) {
        throw fromPgError(err, target.where);
      } finally {
        await client.end().catch(() => {});
      }
    });
}
