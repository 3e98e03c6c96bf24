/**
 * realtimed/react/query: TanStack Query caches kept live by realtimed.
 * Imports @tanstack/react-query (a peer dependency of this entry only).
 */
import { useQueryClient, type QueryKey } from '@tanstack/react-query';

import { handlerFor, useChangeStream, useCoalesced, type ChannelStatus, type LiveListOptions, type RealtimeError } from './index.js';

/**
 * Patches the cached list under `queryKey` from the change stream on
 * `channel` (setQueryData; default handlers by primary key, or yours), each
 * event once, in order. When the client reports a gap it cannot replay, and
 * when an event arrives while the query is still fetching (its result may
 * predate the event), the query is invalidated: the catch-up refetch.
 */
export function useLiveQuery<T>(
  queryKey: QueryKey,
  channel: string | null,
  options: LiveListOptions<T> = {},
): { status: ChannelStatus; error: RealtimeError | null } {
  const queryClient = useQueryClient();
  const refetch = (): void => void queryClient.invalidateQueries({ queryKey });
  return useChangeStream<T>(
    channel,
    (change, meta) => {
      const fetching = queryClient.getQueryState(queryKey)?.fetchStatus === 'fetching';
      queryClient.setQueryData<T[]>(queryKey, (data) => handlerFor(options, change)(data, change, meta));
      if (fetching) refetch();
    },
    refetch,
    options.filter === undefined ? {} : { filter: options.filter },
  );
}

/** Invalidates `queryKeys` once after a burst of `events` on `channel` (and on a gap). */
export function useInvalidateOn(
  channel: string | null,
  events: string | string[],
  queryKeys: QueryKey[],
  options: { debounceMs?: number } = {},
): { status: ChannelStatus; error: RealtimeError | null } {
  const queryClient = useQueryClient();
  return useCoalesced(
    channel,
    events,
    () => {
      for (const queryKey of queryKeys) void queryClient.invalidateQueries({ queryKey });
    },
    options,
  );
}
