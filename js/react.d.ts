// Types for react.js: the useFanout hook (react is an optional peer dependency).
import type {
  EventMeta,
  FanoutClient,
  FanoutOptions,
  FanoutState,
  ResetInfo,
} from "./fanout.js";

export interface UseFanoutOptions<T = unknown, S = T | null> extends FanoutOptions {
  /** Event type(s) whose data the hook keeps. Default "message". */
  event?: string | readonly string[];
  /** `data` before the first event. Default null. */
  initial?: S;
  /** How an event changes `data`; default: the latest event's data replaces it. */
  reducer?: (previous: S, data: T, meta: EventMeta) => S;
  /** false: no connection (and state "closed") until it becomes true. Default true. */
  enabled?: boolean;
}

export interface UseFanoutResult<S> {
  /** `initial`, then the reduced data of the events of `event`. */
  data: S;
  state: FanoutState;
  /** The last reset the daemon sent (continuity lost: refetch your state), or null. */
  reset: ResetInfo | null;
  /** The error of the last failed connection, null once connected again. */
  error: Error | null;
  /** The live client (for addTopics, reconnect…); null before the effect ran and after unmount. */
  client: FanoutClient | null;
  lastEventId: string | null;
  connectionId: string | null;
}

/**
 * Subscribe while the component is mounted; the client is closed on unmount, and
 * replaced (resuming from the last id) when url, topics, event or the connection
 * options change. Callbacks may change on every render without reconnecting.
 */
export declare function useFanout<T = unknown, S = T | null>(
  url: string | URL,
  options?: UseFanoutOptions<T, S>,
): UseFanoutResult<S>;
