/**
 * realtimed/react/swr: SWR caches kept live by realtimed.
 * Imports swr (a peer dependency of this entry only).
 */
import { useSWRConfig, type Key } from 'swr';

import { handlerFor, useChangeStream, useCoalesced, type ChannelStatus, type LiveListOptions, type RealtimeError } from './index.js';

/**
 * Patches the cached list under `key` from the change stream on `channel`
 * (mutate without revalidating; default handlers by primary key, or yours),
 * each event once, in order; revalidates when the client reports a gap it
 * cannot replay.
 */
export function useLiveSWR<T>(key: Key, channel: string | null, options: LiveListOptions<T> = {}): { status: ChannelStatus; error: RealtimeError | null } {
  const { mutate } = useSWRConfig();
  return useChangeStream<T>(
    channel,
    (change, meta) => {
      void mutate<T[]>(key, (data) => handlerFor(options, change)(data, change, meta), { revalidate: false });
    },
    () => void mutate(key),
    options.filter === undefined ? {} : { filter: options.filter },
  );
}

/** Revalidates `keys` once after a burst of `events` on `channel` (and on a gap). */
export function useInvalidateOn(
  channel: string | null,
  events: string | string[],
  keys: Key[],
  options: { debounceMs?: number } = {},
): { status: ChannelStatus; error: RealtimeError | null } {
  const { mutate } = useSWRConfig();
  return useCoalesced(
    channel,
    events,
    () => {
      for (const key of keys) void mutate(key);
    },
    options,
  );
}
