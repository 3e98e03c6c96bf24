// Types for scripts/schema-dump.mjs, for test/sql/schema.test.ts.
import type pg from 'pg';

/** The header every sql/schema.sql starts with. */
export declare const HEADER: string;

/** The text of sql/schema.sql for the database the client is connected to (reads only). */
export declare function dumpSchema(client: pg.ClientBase): Promise<string>;

/** Creates a database on `server`, migrates it with bin/realtimed.js, dumps it and drops it. */
export declare function dumpFreshDatabase(server?: string): Promise<string>;
