/**
 * Subscribe filters (docs/protocol.md, "Filters"): a small grammar the daemon
 * applies to each event's record, after the database has decided who may see
 * the event at all. A filter narrows what a subscriber receives; it never
 * widens it.
 *
 *   filter    = condition *("&" condition)       all conditions must hold
 *   condition = column "=" op "." value
 *   op        = "eq" | "neq" | "lt" | "gt" | "in"
 *   value     = any text; for "in": "(" item *("," item) ")"
 *
 * The record is payload.new, else payload.old (change events), else the
 * payload itself. A missing column matches nothing, not even neq.
 */
export type FilterOp = 'eq' | 'neq' | 'lt' | 'gt' | 'in';

export interface Condition {
  column: string;
  op: FilterOp;
  /** One value, or the list of an "in". */
  values: string[];
}

export type Filter = Condition[];

export const MAX_FILTER_BYTES = 1024;
const MAX_CONDITIONS = 8;
const MAX_IN_ITEMS = 100;
const COLUMN = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/;
const OPS = new Set<string>(['eq', 'neq', 'lt', 'gt', 'in']);

export class FilterError extends Error {}

/** Parses a filter string; throws FilterError saying what is wrong. */
export function parseFilter(text: string): Filter {
  if (text.length === 0 || Buffer.byteLength(text) > MAX_FILTER_BYTES) {
    throw new FilterError(`a filter is 1 to ${MAX_FILTER_BYTES} bytes`);
  }
  const parts = text.split('&');
  if (parts.length > MAX_CONDITIONS) throw new FilterError(`at most ${MAX_CONDITIONS} conditions`);
  return parts.map((part) => {
    const eq = part.indexOf('=');
    if (eq < 0) throw new FilterError(`"${part.slice(0, 40)}" is not column=op.value`);
    const column = part.slice(0, eq);
    if (!COLUMN.test(column)) throw new FilterError(`"${column.slice(0, 40)}" is not a column name`);
    const rest = part.slice(eq + 1);
    const dot = rest.indexOf('.');
    const op = dot < 0 ? rest : rest.slice(0, dot);
    if (!OPS.has(op)) throw new FilterError(`unknown operator "${op.slice(0, 20)}": use eq, neq, lt, gt or in`);
    if (dot < 0) throw new FilterError(`"${column}=${op}" has no value: ${column}=${op}.<value>`);
    const value = rest.slice(dot + 1);
    if (op === 'in') {
      if (!value.startsWith('(') || !value.endsWith(')') || value.length < 3) {
        throw new FilterError(`"in" takes a list: ${column}=in.(a,b,c)`);
      }
      const values = value.slice(1, -1).split(',');
      if (values.length > MAX_IN_ITEMS) throw new FilterError(`"in" takes at most ${MAX_IN_ITEMS} values`);
      return { column, op: 'in', values };
    }
    return { column, op: op as FilterOp, values: [value] };
  });
}

/** The record a filter looks at: payload.new, payload.old, or the payload. */
export function recordOf(payload: unknown): Record<string, unknown> | null {
  if (typeof payload !== 'object' || payload === null || Array.isArray(payload)) return null;
  const p = payload as Record<string, unknown>;
  for (const key of ['new', 'old'] as const) {
    const r = p[key];
    if (typeof r === 'object' && r !== null && !Array.isArray(r)) return r as Record<string, unknown>;
  }
  return p;
}

/** A JSON value as the filter compares it: strings as they are, the rest as JSON text. */
function text(value: unknown): string {
  return typeof value === 'string' ? value : JSON.stringify(value);
}

function compare(value: unknown, operand: string): number {
  if (typeof value === 'number') {
    const n = Number(operand);
    if (operand.trim() !== '' && Number.isFinite(n)) return value - n;
  }
  const a = text(value);
  return a < operand ? -1 : a > operand ? 1 : 0;
}

export function matches(filter: Filter, record: Record<string, unknown> | null): boolean {
  if (record === null) return false;
  for (const c of filter) {
    if (!Object.hasOwn(record, c.column)) return false;
    const value = record[c.column];
    const first = c.values[0] as string;
    switch (c.op) {
      case 'eq':
        if (compare(value, first) !== 0) return false;
        break;
      case 'neq':
        if (compare(value, first) === 0) return false;
        break;
      case 'lt':
        if (value === null || !(compare(value, first) < 0)) return false;
        break;
      case 'gt':
        if (value === null || !(compare(value, first) > 0)) return false;
        break;
      case 'in':
        if (!c.values.some((v) => compare(value, v) === 0)) return false;
        break;
    }
  }
  return true;
}
