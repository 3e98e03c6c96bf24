/**
 * The inspector page (served at /inspector with --inspector; on in
 * `realtimed dev`): connect with a token, subscribe, watch events with their
 * meta, publish, and per-channel statistics. It talks to realtimed through
 * the project's own client, like any application would.
 */
import { createClient, RealtimeError, type EventMeta, type RealtimeClient } from '../client/index.js';
import type { ChannelStatsReply as StatsReply } from '../protocol/stats.js';

const MAX_EVENTS = 200;

const $ = <T extends HTMLElement>(id: string): T => {
  const element = document.getElementById(id);
  if (!element) throw new Error(`#${id} is missing`);
  return element as T;
};

const tokenInput = $<HTMLInputElement>('token');
const stateBadge = $('state');
const wsPath = document.querySelector<HTMLMetaElement>('meta[name="realtimed-path"]')?.content ?? '/';
const wsUrl = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}${wsPath}`;

// A token in the fragment (#token=...) never reaches a server or its logs.
const fromHash = new URLSearchParams(location.hash.slice(1)).get('token');
if (fromHash) tokenInput.value = fromHash;

let rt: RealtimeClient | null = null;

function cell(row: HTMLTableRowElement, text: string, className?: string): void {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
}

function say(id: string, text: string, error = false): void {
  const element = $(id);
  element.textContent = text;
  element.className = error ? 'error' : 'muted';
}

function describe(err: unknown): string {
  return err instanceof RealtimeError ? `${err.code}: ${err.message}` : String(err);
}

function renderSubscriptions(): void {
  const list = $('subscriptions');
  list.replaceChildren();
  for (const channel of rt?.subscriptions ?? []) {
    const item = document.createElement('li');
    item.dataset['channel'] = channel;
    const name = document.createElement('span');
    name.textContent = channel;
    const button = document.createElement('button');
    button.textContent = 'Unsubscribe';
    button.addEventListener('click', () => {
      void rt?.unsubscribe(channel).then(renderSubscriptions);
    });
    item.append(name, button);
    list.append(item);
  }
}

function showEvent(payload: Record<string, unknown>, meta: EventMeta): void {
  const body = $<HTMLTableSectionElement>('events');
  const row = body.insertRow(0);
  row.dataset['seq'] = String(meta.seq);
  cell(row, new Date(meta.timestamp).toLocaleTimeString());
  cell(row, meta.channel);
  cell(row, meta.event);
  cell(row, String(meta.seq));
  cell(row, meta.senderType === 'system' ? 'system' : `user ${meta.senderId ?? '(anonymous)'}`);
  cell(row, JSON.stringify(payload), 'payload');
  row.title = `messageId ${meta.messageId}`;
  while (body.rows.length > MAX_EVENTS) body.deleteRow(-1);
}

function connect(): void {
  rt?.disconnect();
  const token = tokenInput.value.trim();
  const client = createClient(wsUrl, token ? { token } : {});
  rt = client;
  client.onState((state) => {
    stateBadge.textContent = state;
    stateBadge.dataset['state'] = state;
  });
  client.onResync((channel, reason) => {
    say('subscribe-result', `${channel}: ${reason}`, true);
    renderSubscriptions();
  });
  client.on('*', showEvent);
  client.connect().catch((err: unknown) => say('subscribe-result', describe(err), true));
  void refreshStats();
}

$('connect').addEventListener('click', connect);

$('subscribe-form').addEventListener('submit', (event) => {
  event.preventDefault();
  if (!rt) connect();
  const channel = $<HTMLInputElement>('channel').value.trim();
  void rt?.subscribe(channel).then((result) => {
    if (result.ok) say('subscribe-result', `subscribed to ${channel}`);
    else {
      say('subscribe-result', `${channel}: ${describe(result.error)}`, true);
      void rt?.unsubscribe(channel);
    }
    renderSubscriptions();
  });
});

$('publish-form').addEventListener('submit', (event) => {
  event.preventDefault();
  if (!rt) connect();
  const channel = $<HTMLInputElement>('publish-channel').value.trim();
  const name = $<HTMLInputElement>('publish-event').value.trim();
  let payload: Record<string, unknown>;
  try {
    payload = JSON.parse($<HTMLTextAreaElement>('publish-payload').value || '{}') as Record<string, unknown>;
  } catch {
    say('publish-result', 'the payload is not JSON', true);
    return;
  }
  rt?.publish(channel, name, payload).then(
    (ack) => say('publish-result', `published: seq ${ack.seq}, id ${ack.messageId}`),
    (err: unknown) => say('publish-result', describe(err), true),
  );
});

function drawChart(points: StatsReply['perMinute']): void {
  const svg = $('chart');
  const max = Math.max(1, ...points.map((p) => p.messages));
  const width = 300 / Math.max(1, points.length);
  const bars = points.map((p, i) => {
    const height = (p.messages / max) * 86;
    return `<rect x="${(i * width + 1).toFixed(1)}" y="${(90 - height).toFixed(1)}" width="${Math.max(1, width - 2).toFixed(1)}" height="${height.toFixed(1)}"><title>${p.minute}: ${p.messages}</title></rect>`;
  });
  svg.innerHTML = bars.join('');
}

async function refreshStats(): Promise<void> {
  const token = tokenInput.value.trim();
  try {
    const response = await fetch('/inspector/stats', { headers: token ? { authorization: `Bearer ${token}` } : {} });
    if (!response.ok) {
      say('stats-note', `(${response.status})`, true);
      return;
    }
    const stats = (await response.json()) as StatsReply;
    say('stats-note', `(channels your role can see, ${new Date().toLocaleTimeString()})`);
    const body = $<HTMLTableSectionElement>('stats');
    body.replaceChildren();
    for (const c of stats.channels) {
      const row = body.insertRow();
      cell(row, c.enabled ? c.pattern : `${c.pattern} (disabled)`);
      cell(row, String(c.messagesLastHour));
      cell(row, String(c.messagesTotal));
      cell(row, c.avgWsAudience === null ? '-' : String(c.avgWsAudience));
      cell(row, c.webhookSuccessRate === null ? '-' : `${(c.webhookSuccessRate * 100).toFixed(1)}%`);
      cell(row, c.lastMessageAt ? new Date(c.lastMessageAt).toLocaleTimeString() : '-');
    }
    drawChart(stats.perMinute);
  } catch (err) {
    say('stats-note', describe(err), true);
  }
}

setInterval(() => void refreshStats(), 5000);
connect();
