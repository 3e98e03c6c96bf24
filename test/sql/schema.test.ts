/**
 * sql/schema.sql (`npm run db:dump`) is the current state of the migrations:
 * the dump of this test's migrated database, byte for byte.
 */
import { readFile } from 'node:fs/promises';

import t from 'tap';

import { dumpSchema } from '../../scripts/schema-dump.mjs';
import { createDatabase } from '../helpers/db.js';

const COMMITTED = new URL('../../sql/schema.sql', import.meta.url);

/** Where two texts first differ, with a few lines of each from there. */
function firstDifference(committed: string, dumped: string, context = 4): string {
  const a = committed.replace(/\n$/, '').split('\n');
  const b = dumped.replace(/\n$/, '').split('\n');
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  const show = (lines: string[], mark: string) =>
    [...lines.slice(i, i + context), ...(i + context > lines.length ? ['(end of file)'] : [])]
      .map((line) => `${mark} ${line}`)
      .join('\n');
  return `line ${i + 1}:\n${show(a, '- sql/schema.sql |')}\n${show(b, '+ migrated db   |')}\n`;
}

t.test('sql/schema.sql is the dump of the migrated schema', async (t) => {
  const db = await createDatabase(t);
  const client = await db.pool.connect();
  let dumped: string;
  try {
    dumped = await dumpSchema(client);
  } finally {
    client.release();
  }
  const committed = await readFile(COMMITTED, 'utf8').catch(() => '');
  if (committed === dumped) {
    t.pass('sql/schema.sql is current');
    return;
  }
  t.fail('sql/schema.sql is stale: run `npm run db:dump` and commit the result', {
    'first difference': firstDifference(committed, dumped),
  });
});
