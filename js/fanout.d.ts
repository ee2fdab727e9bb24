// Types for fanout.js (fanout/static/fanout.js, copied into this package on pack).
// test/declarations.test.mjs checks that every option, method and export of the
// JavaScript is declared here, and types/usage.ts is compiled with `tsc --noEmit`.

export declare const CONNECTING: "connecting";
export declare const OPEN: "open";
export declare const RECONNECTING: "reconnecting";
export declare const CLOSED: "closed";

/** connecting → open (the daemon's `connected` event arrived) → reconnecting → … → closed. */
export type FanoutState =
  | typeof CONNECTING
  | typeof OPEN
  | typeof RECONNECTING
  | typeof CLOSED;

/** A bearer token, or a function called at each connect (so it can be refreshed). */
export type TokenSource =
  | string
  | null
  | (() => string | null | undefined | Promise<string | null | undefined>);

export interface FanoutOptions {
  /** Topics to subscribe to (the `topic` query parameters). Default `[]`. */
  topics?: readonly string[] | ReadonlySet<string>;
  /** "eventsource" (default): the browser's EventSource. "fetch": fetch + a stream reader, which can send headers. */
  mode?: "eventsource" | "fetch";
  /** fetch mode: sent as `Authorization: Bearer <token>`. Default `null`. */
  token?: TokenSource;
  /** fetch mode: extra request headers. Default `{}`. */
  headers?: Record<string, string>;
  /** Send cookies cross-origin (EventSource `withCredentials`, fetch `credentials: "include"`). Default `false`. */
  withCredentials?: boolean;
  /** Resume from this id on the first connect. Default `null`. */
  lastEventId?: string | null;
  /** First reconnect delay. Default 500. */
  initialDelayMs?: number;
  /** Largest reconnect delay. Default 30000. */
  maxDelayMs?: number;
  /** Each failed attempt multiplies the delay by this. Default 2. */
  factor?: number;
  /** Up to this fraction of each delay is taken off at random. Default 0.5. */
  jitter?: number;
  /** Same as calling `client.onState(handler)` right away. */
  onState?: StateHandler;
  /** Same as calling `client.onReset(handler)` right away. */
  onReset?: ResetHandler;
  /** Same as calling `client.onError(handler)` right away. */
  onError?: ErrorHandler;
}

/** The options after defaults are applied (`client.options`). */
export interface ResolvedFanoutOptions extends FanoutOptions {
  topics: readonly string[] | ReadonlySet<string>;
  mode: "eventsource" | "fetch";
  token: TokenSource;
  headers: Record<string, string>;
  withCredentials: boolean;
  lastEventId: string | null;
  initialDelayMs: number;
  maxDelayMs: number;
  factor: number;
  jitter: number;
}

/** The second argument of every event handler. */
export interface EventMeta {
  /** The SSE event type (`message` when the publisher gave none). */
  type: string;
  /** The last event id, as EventSource defines it (a latest-value snapshot reports the one before it). */
  id: string | null;
  /** The data as sent, before JSON decoding. */
  raw: string;
}

/** `data` is the JSON-decoded payload, or the raw text when it is not JSON. */
export type EventHandler<T = unknown> = (data: T, meta: EventMeta) => void;

/** The first event of every stream. */
export interface ConnectedEvent {
  /** This connection's id (publish to it with the control API's /send). */
  connection: string;
  /** The authenticated user, or null when anonymous. */
  user: string | null;
  topics: string[];
}

export type ResetReason = "stale" | "other-epoch" | "malformed" | "future";

/** The daemon could not resume from the last id: refetch your state. */
export interface ResetInfo {
  reason: ResetReason;
  lastEventId: string | null;
  /** The oldest id the daemon still retains for these topics, if any. */
  oldestId: string | null;
  message: string;
}

/** The last event of a connection closed by the per-user evict-oldest policy. */
export interface EvictedEvent {
  reason: string;
}

/** Event types the daemon itself sends, with their payloads. */
export interface BuiltinEvents {
  connected: ConnectedEvent;
  reset: ResetInfo;
  evicted: EvictedEvent;
}

export type StateHandler = (state: FanoutState, previous: FanoutState) => void;
export type ResetHandler = (info: ResetInfo) => void;
export interface RetryInfo {
  /** 1 for the first retry after a success. */
  attempt: number;
  /** How long until the next connect. */
  delayMs: number;
}
export type ErrorHandler = (error: Error, retry: RetryInfo) => void;
/** Removes the handler it was returned for. Returns whether it was still registered. */
export type Unsubscribe = () => boolean;

/** Parses an SSE stream already decoded to text, per the WHATWG grammar. */
export declare class SSEParser {
  constructor(onEvent: (type: string, data: string, lastEventId: string) => void);
  onEvent: (type: string, data: string, lastEventId: string) => void;
  buffer: string;
  data: string[];
  type: string;
  lastEventId: string;
  /** Feed the next chunk of text; complete events are passed to onEvent. */
  feed(text: string): void;
  /** Process one line (without its line terminator). */
  line(line: string): void;
}

export declare class FanoutClient {
  /** Starts connecting at once. `url` is resolved against the page (absolute outside one). */
  constructor(url?: string | URL, options?: FanoutOptions);
  readonly url: string | URL;
  readonly options: ResolvedFanoutOptions;
  /** The topics of the current subscription; change them with addTopics/removeTopics. */
  readonly topics: Set<string>;
  /** The last event id seen; every reconnect resumes from it. */
  lastEventId: string | null;
  /** The id from the current connection's `connected` event. */
  connectionId: string | null;
  readonly state: FanoutState;

  /** Call handler for each event of this type; returns an unsubscribe function. */
  on<K extends keyof BuiltinEvents>(type: K, handler: EventHandler<BuiltinEvents[K]>): Unsubscribe;
  on<T = unknown>(type: string, handler: EventHandler<T>): Unsubscribe;
  /** handler(state, previous) on each change of state. */
  onState(handler: StateHandler): Unsubscribe;
  /** handler(info) when the daemon says continuity was lost. */
  onReset(handler: ResetHandler): Unsubscribe;
  /** handler(error, {attempt, delayMs}) when a connection fails and a retry is planned. */
  onError(handler: ErrorHandler): Unsubscribe;
  /** Listen to more topics: reconnects at once, resuming from lastEventId. */
  addTopics(...topics: string[]): void;
  /** Stop listening to topics: reconnects at once, resuming from lastEventId. */
  removeTopics(...topics: string[]): void;
  /** Reconnect now, resuming; `{fresh: true}` starts over (latest values are sent again). */
  reconnect(options?: { fresh?: boolean }): void;
  /** Stop for good: no reconnect, state becomes closed. */
  close(): void;
}

/** A FanoutClient that is already connecting. */
export declare function connect(url?: string | URL, options?: FanoutOptions): FanoutClient;
