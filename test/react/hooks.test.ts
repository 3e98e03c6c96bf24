/**
 * realtimed/react against a real realtimed and PostgreSQL, rendered with
 * @testing-library/react in happy-dom, the client on a real `ws` socket:
 * StrictMode, shared subscriptions, unmount, handler identity, presence,
 * the TanStack Query and SWR live lists (default and custom handlers), burst
 * coalescing and the refetch after a gap replay cannot fill.
 */
import { GlobalRegistrator } from '@happy-dom/global-registrator';

// A DOM for React, keeping Node's own timers, fetch and WebSocket-less global.
const timers = { setTimeout, clearTimeout, setInterval, clearInterval, setImmediate, queueMicrotask };
GlobalRegistrator.register();
Object.assign(globalThis, timers);
delete (globalThis as { WebSocket?: unknown }).WebSocket;
(globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean }).IS_REACT_ACT_ENVIRONMENT = true;

const { act, cleanup, render } = await import('@testing-library/react');
const { createElement: h, StrictMode, useState } = await import('react');
const { QueryClient, QueryClientProvider, useQuery } = await import('@tanstack/react-query');
const { SWRConfig, default: useSWR } = await import('swr');
const WebSocket = (await import('ws')).default;
const t = (await import('tap')).default;

import type { ReactNode } from 'react';

import { createClient, type RealtimeClient, type WebSocketConstructor } from '../../src/client/index.js';
import { RealtimeProvider, useChannel, useEvent, usePresence, useRealtime } from '../../src/react/index.js';
import { useInvalidateOn, useLiveQuery } from '../../src/react/query.js';
import { useLiveSWR } from '../../src/react/swr.js';
import { createDatabase, type TestDatabase } from '../helpers/db.js';
import { loadExamples, startDaemon } from '../helpers/daemon.js';
import { ALICE, BOB, userToken } from '../helpers/jwt.js';
import { until } from '../helpers/wait.js';

t.teardown(() => GlobalRegistrator.unregister());
t.afterEach(() => cleanup());

/** Every frame the client sends, to count subscribes on the wire. */
function countingSocket(sent: string[]): WebSocketConstructor {
  return class extends WebSocket {
    override send(data: unknown): void {
      sent.push(String(data));
      super.send(data as string);
    }
  } as unknown as WebSocketConstructor;
}

const subscribes = (sent: string[], channel: string): number =>
  sent.filter((f) => (JSON.parse(f) as { type: string; channel?: string }).type === 'subscribe' && f.includes(`"${channel}"`)).length;

async function setup(t: Tap, overrides: Record<string, unknown> = {}) {
  const db = await createDatabase(t);
  await loadExamples(db);
  await db.pool.query(`
    create table app.projects (id bigint primary key, owner_id uuid not null, name text not null);
    alter table app.projects enable row level security;
    create policy projects_owner on app.projects for select to authenticated using (owner_id = (select realtime.uid()));
    grant select on app.projects to authenticated;
    select realtime.enable_changes('app.projects', row_channels => false);
    create policy "projects:changes: signed-in users" on realtime.channels for select to authenticated
      using (pattern = 'projects:changes');`);
  const daemon = await startDaemon(t, db, overrides);
  return { db, daemon };
}
type Tap = { teardown(fn: () => unknown): void };

async function clientFor(t: Tap, wsUrl: string, user: string, sent: string[] = []): Promise<RealtimeClient> {
  const client = createClient(wsUrl, { token: await userToken(user), WebSocket: countingSocket(sent), backoff: { initialMs: 50, maxMs: 200 } });
  t.teardown(() => client.disconnect());
  return client;
}

const projectsOf = async (db: TestDatabase, owner: string): Promise<{ id: number; name: string; owner_id: string }[]> =>
  (await db.pool.query(`select id::int, name, owner_id::text from app.projects where owner_id = $1 order by id`, [owner])).rows;

t.test('StrictMode, two components on one channel: one subscribe on the wire; the last unmount unsubscribes', async (t) => {
  const { db, daemon } = await setup(t);
  const sent: string[] = [];
  const client = await clientFor(t, daemon.wsUrl, ALICE, sent);
  const seen: string[] = [];
  function Ticks(props: { name: string }): ReactNode {
    const { status } = useEvent<{ n: number }>('orders', 'tick', (payload) => seen.push(`${props.name} ${payload.n}`));
    return h('span', { 'data-status': status, id: props.name }, status);
  }
  function App(props: { a: boolean; b: boolean }): ReactNode {
    return h(StrictMode, null, h(RealtimeProvider, { client }, props.a ? h(Ticks, { name: 'a' }) : null, props.b ? h(Ticks, { name: 'b' }) : null));
  }
  await client.connect(); // open already: StrictMode's second mount happens on a live socket
  const view = render(h(App, { a: true, b: true }));
  await until('both subscribed', () => (view.container as unknown as { querySelectorAll(s: string): { length: number } }).querySelectorAll('[data-status="subscribed"]').length === 2);
  t.equal(subscribes(sent, 'orders'), 1, 'one subscribe frame for two components under StrictMode');
  t.notOk(sent.some((f) => f.includes('"unsubscribe"')), 'and no unsubscribe from its unmount-and-mount again');
  t.equal(daemon.daemon.server.connections.size, 1, 'one socket');

  await db.pool.query(`select realtime.publish('orders', 'tick', '{"n": 1}')`);
  await until('both handlers ran once', () => seen.length >= 2);
  t.same([...seen].sort(), ['a 1', 'b 1'], 'each component got the event once');

  view.rerender(h(App, { a: false, b: true }));
  await new Promise((r) => setTimeout(r, 0));
  t.notOk(sent.some((f) => f.includes('"unsubscribe"')), 'one left: still subscribed');
  view.rerender(h(App, { a: false, b: false }));
  await until('the last unmount unsubscribes', () => sent.some((f) => f.includes('"unsubscribe"') && f.includes('"orders"')));
  t.equal(subscribes(sent, 'orders'), 1, 'and never subscribed again');
});

t.test('a new handler each render: the latest is called, nothing resubscribes', async (t) => {
  const { db, daemon } = await setup(t);
  const sent: string[] = [];
  const client = await clientFor(t, daemon.wsUrl, ALICE, sent);
  const calls: string[] = [];
  function Ticks(props: { label: string }): ReactNode {
    const { status } = useEvent<{ n: number }>('orders', 'tick', (p) => calls.push(`${props.label} ${p.n}`));
    return h('i', { id: 's' }, status);
  }
  const tree = (label: string) => h(RealtimeProvider, { client }, h(Ticks, { label }));
  const view = render(tree('first'));
  await until('subscribed', () => (view.container as unknown as { textContent: string }).textContent === 'subscribed');
  view.rerender(tree('second'));
  await db.pool.query(`select realtime.publish('orders', 'tick', '{"n": 2}')`);
  await until('called', () => calls.length > 0);
  t.same(calls, ['second 2'], 'the handler of the latest render');
  t.equal(subscribes(sent, 'orders'), 1, 'one subscribe');
});

t.test('refused: status error with the code; the provider makes and closes its own client', async (t) => {
  const { daemon } = await setup(t);
  const token = await userToken(BOB);
  let seen: { status: string; code: string | undefined; state: string } | null = null;
  function Secret(): ReactNode {
    const { status, error } = useChannel('order:1');
    const { state } = useRealtime();
    seen = { status, code: error?.code, state };
    return null;
  }
  const view = render(h(RealtimeProvider, { url: daemon.wsUrl, options: { token, WebSocket: WebSocket as unknown as WebSocketConstructor } }, h(Secret)));
  await until('refused', () => seen?.status === 'error');
  t.match(seen, { status: 'error', code: 'UNAUTHORIZED', state: 'open' }, "bob may not subscribe to alice's order");
  view.unmount();
});

t.test('presence of two pages', async (t) => {
  const { daemon } = await setup(t);
  const alice = await clientFor(t, daemon.wsUrl, ALICE);
  const bob = await clientFor(t, daemon.wsUrl, BOB);
  const views: Record<string, string[]> = {};
  const statuses: Record<string, string> = {};
  function Room(props: { who: string }): ReactNode {
    const { members, setPresence, status } = usePresence('chat:7');
    views[props.who] = Object.keys(members).sort();
    statuses[props.who] = status;
    const [done, setDone] = useState(false);
    if (status === 'subscribed' && !done) {
      setDone(true);
      void setPresence({ name: props.who });
    }
    return null;
  }
  render(h(RealtimeProvider, { client: alice }, h(Room, { who: 'alice' })));
  await until('alice present', () => views['alice']?.length === 1);
  t.same(views['alice'], [ALICE], 'alice sees herself');
  // bob is not a chat member (the example policy): his usePresence is refused and alice sees only herself.
  render(h(RealtimeProvider, { client: bob }, h(Room, { who: 'bob' })));
  await until('bob refused', () => statuses['bob'] === 'error');
  t.same(views['alice'], [ALICE], 'alice still sees only herself');
});

t.test('useLiveQuery: a list kept live by INSERT, UPDATE, DELETE under RLS; bob never sees alice\'s rows', async (t) => {
  const { db, daemon } = await setup(t);
  await db.pool.query(`insert into app.projects values (1, $1, 'one'), (2, $2, 'bobs')`, [ALICE, BOB]);
  const lists: Record<string, { id: number; name: string }[] | undefined> = {};
  const fetches: Record<string, number> = { alice: 0, bob: 0 };
  function Projects(props: { who: string; owner: string }): ReactNode {
    const { data } = useQuery({
      queryKey: ['projects', props.owner],
      queryFn: async () => {
        fetches[props.who] = (fetches[props.who] ?? 0) + 1;
        return projectsOf(db, props.owner);
      },
    });
    useLiveQuery<{ id: number; name: string }>(['projects', props.owner], 'projects:changes');
    lists[props.who] = data;
    return null;
  }
  for (const [who, owner] of [['alice', ALICE], ['bob', BOB]] as const) {
    const client = await clientFor(t, daemon.wsUrl, owner);
    const queryClient = new QueryClient({ defaultOptions: { queries: { retry: false, staleTime: Infinity } } });
    render(h(StrictMode, null, h(QueryClientProvider, { client: queryClient }, h(RealtimeProvider, { client }, h(Projects, { who, owner })))));
  }
  await until('both lists loaded', () => lists['alice']?.length === 1 && lists['bob']?.length === 1);
  await until('subscribed', () => daemon.daemon.metrics.registry.getSingleMetricAsString('realtimed_subscriptions').then((m) => / 2$/m.test(m)));

  await db.pool.query(`insert into app.projects values (3, $1, 'three')`, [ALICE]);
  await until('insert applied', () => lists['alice']?.length === 2);
  await db.pool.query(`update app.projects set name = 'ONE' where id = 1`);
  await until('update applied', () => lists['alice']?.[0]?.name === 'ONE');
  await db.pool.query(`delete from app.projects where id = 3`);
  await until('delete applied', () => lists['alice']?.length === 1);
  t.match(lists['alice'], [{ id: 1, name: 'ONE' }], "alice's list follows her rows");
  t.same(lists['bob']?.map((r) => r.id), [2], "bob's list never showed alice's rows");
  t.same(fetches, { alice: 1, bob: 1 }, 'patched in place, not refetched');
});

t.test('useLiveQuery: the server closes the socket mid-stream; after reconnect no row is missing or twice', async (t) => {
  const { db, daemon } = await setup(t);
  const sent: string[] = [];
  const client = await clientFor(t, daemon.wsUrl, ALICE, sent);
  const sentSubscribes = () => subscribes(sent, 'projects:changes');
  let list: { id: number }[] | undefined;
  function Projects(): ReactNode {
    list = useQuery({ queryKey: ['p'], queryFn: () => projectsOf(db, ALICE) }).data;
    useLiveQuery<{ id: number }>(['p'], 'projects:changes');
    return null;
  }
  const queryClient = new QueryClient({ defaultOptions: { queries: { retry: false, staleTime: Infinity } } });
  render(h(QueryClientProvider, { client: queryClient }, h(RealtimeProvider, { client }, h(Projects))));
  await until('loaded', () => list !== undefined);
  await until('subscribed', () => daemon.daemon.metrics.registry.getSingleMetricAsString('realtimed_subscriptions').then((m) => / 1$/m.test(m)));
  await db.pool.query(`insert into app.projects values (1, $1, 'a')`, [ALICE]);
  await until('first row', () => list?.length === 1);
  // The server closes every socket (1012, as on a restart) while rows are written; the client
  // reconnects and replays from its last seq.
  const writing = db.pool.query(`insert into app.projects select g, $1, 'r' || g from generate_series(2, 4) g`, [ALICE]);
  for (const connection of daemon.daemon.server.connections) connection.ws.close(1012, 'restart');
  await writing;
  await db.pool.query(`insert into app.projects select g, $1, 'r' || g from generate_series(5, 6) g`, [ALICE]);
  await until('every row after reconnect', () => list?.length === 6);
  t.same(list?.map((r) => r.id), [1, 2, 3, 4, 5, 6], 'each row once, in order');
  t.ok(sentSubscribes() >= 2, 'it did resubscribe');
});

t.test('useLiveQuery: a gap too large to replay refetches the query', async (t) => {
  const { db, daemon } = await setup(t, { maxReplay: 2 });
  const client = await clientFor(t, daemon.wsUrl, ALICE);
  let fetches = 0;
  let list: { id: number }[] | undefined;
  function Projects(): ReactNode {
    list = useQuery({ queryKey: ['p'], queryFn: () => (fetches++, projectsOf(db, ALICE)) }).data;
    useLiveQuery<{ id: number }>(['p'], 'projects:changes');
    return null;
  }
  const queryClient = new QueryClient({ defaultOptions: { queries: { retry: false, staleTime: Infinity } } });
  render(h(QueryClientProvider, { client: queryClient }, h(RealtimeProvider, { client }, h(Projects))));
  await until('loaded', () => list !== undefined);
  await until('subscribed', () => daemon.daemon.metrics.registry.getSingleMetricAsString('realtimed_subscriptions').then((m) => / 1$/m.test(m)));
  await db.pool.query(`insert into app.projects values (1, $1, 'a')`, [ALICE]);
  await until('first row', () => list?.length === 1);
  client.disconnect();
  await db.pool.query(`insert into app.projects select g, $1, 'r' || g from generate_series(2, 9) g`, [ALICE]);
  await act(async () => {
    await client.connect();
  });
  await until('refetched after the gap', () => fetches === 2 && list?.length === 9);
  t.equal(fetches, 2, 'one refetch');
});

t.test('custom handlers, and useInvalidateOn coalescing a burst into one invalidation', async (t) => {
  const { db, daemon } = await setup(t);
  const client = await clientFor(t, daemon.wsUrl, ALICE);
  let names: string[] | undefined;
  let counted = 0;
  let fetches = 0;
  function Names(): ReactNode {
    names = useQuery({ queryKey: ['names'], queryFn: async () => [] as string[] }).data;
    useQuery({ queryKey: ['count'], queryFn: async () => (fetches++, counted) });
    useLiveQuery<{ id: number; name: string }>(['names'] as const, 'projects:changes', {
      onInsert: (data, change) => (data === undefined ? data : ([...(data as unknown as string[]), change.new?.name ?? '?'] as never)),
    });
    useInvalidateOn('projects:changes', ['insert', 'update'], [['count']], { debounceMs: 150 });
    return null;
  }
  const queryClient = new QueryClient({ defaultOptions: { queries: { retry: false, staleTime: Infinity } } });
  render(h(QueryClientProvider, { client: queryClient }, h(RealtimeProvider, { client }, h(Names))));
  await until('loaded', () => names !== undefined && fetches === 1);
  await until('subscribed', () => daemon.daemon.metrics.registry.getSingleMetricAsString('realtimed_subscriptions').then((m) => / 1$/m.test(m)));
  counted = 20;
  await db.pool.query(`insert into app.projects select g, $1, 'n' || g from generate_series(1, 20) g`, [ALICE]);
  await until('the custom handler saw all 20', () => names?.length === 20);
  t.equal(names?.[19], 'n20', 'in order');
  await until('one invalidation for the burst', () => fetches === 2);
  await new Promise((r) => setTimeout(r, 300));
  t.equal(fetches, 2, 'a burst of 20 inserts: one refetch');
});

t.test('useLiveSWR: the SWR twin', async (t) => {
  const { db, daemon } = await setup(t);
  const client = await clientFor(t, daemon.wsUrl, ALICE);
  let list: { id: number; name: string }[] | undefined;
  function Projects(): ReactNode {
    list = useSWR('projects', () => projectsOf(db, ALICE)).data;
    useLiveSWR<{ id: number; name: string }>('projects', 'projects:changes');
    return null;
  }
  render(h(SWRConfig, { value: { provider: () => new Map(), dedupingInterval: 0, revalidateOnFocus: false } }, h(RealtimeProvider, { client }, h(Projects))));
  await until('loaded', () => list !== undefined);
  await until('subscribed', () => daemon.daemon.metrics.registry.getSingleMetricAsString('realtimed_subscriptions').then((m) => / 1$/m.test(m)));
  await db.pool.query(`insert into app.projects values (1, $1, 'one'), (2, $1, 'two')`, [ALICE]);
  await until('inserted', () => list?.length === 2);
  await db.pool.query(`update app.projects set name = 'TWO' where id = 2; delete from app.projects where id = 1`);
  await until('updated and deleted', () => list?.length === 1 && list[0]?.name === 'TWO');
  t.match(list, [{ id: 2, name: 'TWO' }]);
});
