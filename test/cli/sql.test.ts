/**
 * `realtimed sql`: the plain script, on a two-migration fixture chain so the
 * upgrade path (--from) is exercised, and on the real chain.
 */
import { fileURLToPath } from 'node:url';

import t from 'tap';
import pg from 'pg';

import { RealtimedError } from '../../src/cli/errors.js';
import { buildScript, loadMigrations } from '../../src/cli/sql.js';
import { createDatabase } from '../helpers/db.js';

const FIXTURE = fileURLToPath(new URL('../fixtures/chain/', import.meta.url));

async function tables(pool: pg.Pool): Promise<string[]> {
  const { rows } = await pool.query<{ relname: string }>(
    `select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
     where n.nspname = 'realtime' and c.relkind = 'r' order by 1`,
  );
  return rows.map((r) => r.relname);
}

async function installed(pool: pg.Pool): Promise<number[]> {
  const { rows } = await pool.query<{ version: number }>('select version from realtime.schema_versions order by 1');
  return rows.map((r) => r.version);
}

t.test('the real chain is numbered and hash-linked', async (t) => {
  const migrations = await loadMigrations();
  t.ok(migrations.length >= 1);
  migrations.forEach((m, i) => {
    t.equal(m.version, i + 1, `${m.filename} is version ${i + 1}`);
    t.equal(m.previousHash, i === 0 ? null : migrations[i - 1]?.hash, `${m.filename} links to its predecessor`);
    t.match(m.body, `insert into realtime.schema_versions (version, name) values (${m.version}, `,
      `${m.filename} records its version`);
  });
});

t.test('a full script installs everything and is a no-op the second time', async (t) => {
  const db = await createDatabase(t, { migrated: false });
  const script = buildScript(await loadMigrations(FIXTURE));
  t.match(script, /^begin;$/m);
  t.match(script, /^commit;$/m);
  await db.pool.query(script);
  t.same(await tables(db.pool), ['schema_versions', 't1', 't2']);
  t.same(await installed(db.pool), [1, 2]);
  await db.pool.query(script);
  t.same(await installed(db.pool), [1, 2], 'running it again changes nothing');
});

t.test('--from upgrades an installed database and refuses one that is behind', async (t) => {
  const db = await createDatabase(t, { migrated: false });
  const all = await loadMigrations(FIXTURE);
  await db.pool.query(buildScript(all.slice(0, 1)));
  t.same(await installed(db.pool), [1], 'an older release installed version 1');

  const tooNew = buildScript(all, { from: 2 });
  await t.rejects(db.pool.query(tooNew), { message: /upgrades realtime from version 2, but this database is at version 1/ });
  t.same(await tables(db.pool), ['schema_versions', 't1'], 'the refused script changed nothing');

  const upgrade = buildScript(all, { from: 1 });
  t.notMatch(upgrade, 'create table realtime.t1', 'the upgrade leaves out what is installed');
  await db.pool.query(upgrade);
  t.same(await installed(db.pool), [1, 2]);
  t.same(await tables(db.pool), ['schema_versions', 't1', 't2']);
});

t.test('script options and refusals', async (t) => {
  const all = await loadMigrations(FIXTURE);
  const bare = buildScript(all, { transaction: false });
  t.notMatch(bare, /^begin;$/m, '--no-transaction leaves out BEGIN');
  t.notMatch(bare, /^commit;$/m, '... and COMMIT');
  t.throws(() => buildScript(all, { from: 3 }), RealtimedError);
  t.throws(() => buildScript(all, { from: -1 }), { code: 'RT_ERR_VERSION' });
  const clash = all.map((m) => ({ ...m, body: `${m.body}\n-- $realtimed_sql_000001$\n` }));
  t.throws(() => buildScript(clash), /dollar-quote tag/, 'a body containing the builder’s quote tag is refused');
});
