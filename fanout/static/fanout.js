// fanout.js: the browser client for the fanout SSE daemon.
// An ES module with no build step and no dependencies; the daemon serves it at /fanout.js,
// and js/ in the repository packs this same file as the npm package fanout-client
// (types in js/fanout.d.ts: keep them in step with what this file accepts).
//
//   import { connect } from "/fanout.js";
//   const client = connect("/events", { topics: ["orders", "progress:job-42"] });
//   const off = client.on("progress", (data, meta) => render(data));
//   client.onReset((info) => refetchEverything());
//   client.onState((state) => badge(state));
//
// Two transports:
// - "eventsource" (default): the browser's EventSource. It cannot set headers, so a
//   resume sends the last id as the `lastEventId` query parameter, which the daemon
//   accepts as it does the Last-Event-ID header. Cookies go along (withCredentials).
// - "fetch": for apps that authenticate with tokens. Sends `Authorization: Bearer
//   <token>` (token may be a function, called at each connect, so it can refresh)
//   and resumes with a real `Last-Event-ID` header.
//
// Both reconnect themselves rather than leaving it to EventSource: the browser's
// own retry is a fixed delay, and thousands of pages reconnecting after a restart
// on the same fixed delay arrive together. Here the delay grows exponentially up
// to a maximum, with jitter, and goes back to the start once the daemon answers.

export const CONNECTING = "connecting";
export const OPEN = "open";
export const RECONNECTING = "reconnecting";
export const CLOSED = "closed";

const DEFAULTS = {
  topics: [],
  mode: "eventsource", // or "fetch"
  token: null, // fetch mode: string or () => string | Promise<string>
  headers: {}, // fetch mode: extra request headers
  withCredentials: false,
  lastEventId: null, // resume from here on the first connect
  initialDelayMs: 500,
  maxDelayMs: 30000,
  factor: 2,
  jitter: 0.5, // up to this fraction of each delay is taken off at random
};

// Events the client itself listens for, whatever handlers the app registers.
const BUILTIN_TYPES = ["connected", "reset", "message"];

function decode(raw) {
  try {
    return JSON.parse(raw);
  } catch {
    return raw; // published with `text`, not JSON
  }
}

function report(error) {
  // A failing handler must not stop the stream or the other handlers.
  if (typeof reportError === "function") reportError(error);
  else setTimeout(() => { throw error; });
}

function addHandler(set, handler) {
  set.add(handler);
  return () => set.delete(handler);
}

/** Parses an SSE byte stream already decoded to text, per the WHATWG grammar. */
export class SSEParser {
  constructor(onEvent) {
    this.onEvent = onEvent; // (type, data, lastEventId)
    this.buffer = "";
    this.data = [];
    this.type = "";
    this.lastEventId = "";
  }

  feed(text) {
    const buf = this.buffer + text;
    let start = 0;
    for (let i = 0; i < buf.length; i++) {
      const c = buf[i];
      if (c !== "\n" && c !== "\r") continue;
      if (c === "\r" && i + 1 === buf.length) break; // a CRLF may be split across chunks
      const line = buf.slice(start, i);
      if (c === "\r" && buf[i + 1] === "\n") i++;
      start = i + 1;
      this.line(line);
    }
    this.buffer = buf.slice(start);
  }

  line(line) {
    if (line === "") {
      if (this.data.length) this.onEvent(this.type || "message", this.data.join("\n"), this.lastEventId);
      this.data = [];
      this.type = "";
      return;
    }
    if (line[0] === ":") return; // comment: the daemon's heartbeat
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value[0] === " ") value = value.slice(1);
    if (field === "data") this.data.push(value);
    else if (field === "event") this.type = value;
    else if (field === "id" && !value.includes("\0")) this.lastEventId = value;
    // `retry` is ignored: reconnection timing is ours (see the top of this file).
  }
}

export class FanoutClient {
  constructor(url = "events", options = {}) {
    this.url = url;
    this.options = { ...DEFAULTS, ...options };
    this.topics = new Set(this.options.topics);
    this.lastEventId = this.options.lastEventId || null;
    this.connectionId = null;
    this.state = CLOSED;
    this._handlers = new Map(); // event type -> Set of handlers
    this._stateHandlers = new Set();
    this._resetHandlers = new Set();
    this._errorHandlers = new Set();
    this._attempt = 0;
    this._generation = 0; // callbacks of a torn-down connection compare and bail out
    this._timer = null;
    this._source = null;
    this._abort = null;
    this._closed = false;
    this._listener = (e) => this._dispatch(e.type, e.data, e.lastEventId);
    if (options.onState) this.onState(options.onState);
    if (options.onReset) this.onReset(options.onReset);
    if (options.onError) this.onError(options.onError);
    this._open(CONNECTING);
  }

  /**
   * Call handler(data, {type, id, raw}) for each event of this type; returns an
   * unsubscribe function. data is the JSON-decoded payload (the raw text if it is
   * not JSON); id is the last event id as EventSource defines it (a latest-value
   * snapshot has no id of its own and reports the one before it).
   */
  on(type, handler) {
    let set = this._handlers.get(type);
    if (!set) {
      set = new Set();
      this._handlers.set(type, set);
      // EventSource dispatches a named event only to listeners of that name.
      if (this._source && !BUILTIN_TYPES.includes(type)) this._source.addEventListener(type, this._listener);
    }
    return addHandler(set, handler);
  }

  /** handler(state, previous) on each change: connecting, open, reconnecting, closed. */
  onState(handler) {
    return addHandler(this._stateHandlers, handler);
  }

  /**
   * handler({reason, lastEventId, oldestId, message}) when the daemon says continuity
   * was lost (a restart, or an id older than it retains): refetch your state.
   */
  onReset(handler) {
    return addHandler(this._resetHandlers, handler);
  }

  /** handler(error, {attempt, delayMs}) when a connection fails and a retry is planned. */
  onError(handler) {
    return addHandler(this._errorHandlers, handler);
  }

  /**
   * Listen to more topics: reconnects at once, resuming from lastEventId, so nothing
   * is missed on the topics already followed, and the new topics' events published
   * since that id are replayed too. Anything older on a new topic is not: for state
   * (a job's progress), use a latest-value topic or fetch it first.
   */
  addTopics(...topics) {
    const before = this.topics.size;
    for (const t of topics) this.topics.add(t);
    if (this.topics.size !== before) this.reconnect();
  }

  removeTopics(...topics) {
    let changed = false;
    for (const t of topics) changed = this.topics.delete(t) || changed;
    if (changed) this.reconnect();
  }

  /**
   * Drop the current connection and open a new one now, resuming from lastEventId;
   * with {fresh: true}, start over instead: latest-value topics send their current
   * value at once, which is how a page refetches its state after onReset.
   */
  reconnect({ fresh = false } = {}) {
    if (this._closed) return;
    if (fresh) this.lastEventId = null;
    this._teardown();
    this._attempt = 0;
    this._open(RECONNECTING);
  }

  close() {
    this._closed = true;
    this._teardown();
    this._setState(CLOSED);
  }

  // -- internals ---------------------------------------------------------------

  _streamUrl(withIdParam) {
    // Outside a page (Node, server-side rendering, tests) there is no document:
    // the url must then be absolute.
    const base = typeof document === "undefined" ? undefined : document.baseURI;
    const url = new URL(this.url, base);
    for (const t of this.topics) url.searchParams.append("topic", t);
    if (withIdParam && this.lastEventId) url.searchParams.set("lastEventId", this.lastEventId);
    return url.toString();
  }

  _open(state) {
    this._setState(state);
    const gen = ++this._generation;
    if (this.options.mode === "fetch") {
      this._fetch(gen);
      return;
    }
    const source = new EventSource(this._streamUrl(true), { withCredentials: this.options.withCredentials });
    const types = new Set([...BUILTIN_TYPES, ...this._handlers.keys()]);
    for (const type of types) source.addEventListener(type, this._listener);
    source.onerror = () => {
      if (gen === this._generation) this._retry(new Error("event stream failed or closed"));
    };
    this._source = source;
  }

  async _fetch(gen) {
    const abort = new AbortController();
    this._abort = abort;
    const { token, headers, withCredentials } = this.options;
    let response;
    try {
      const value = typeof token === "function" ? await token() : token;
      const sent = { Accept: "text/event-stream", ...headers };
      if (value) sent.Authorization = `Bearer ${value}`;
      if (this.lastEventId) sent["Last-Event-ID"] = this.lastEventId;
      response = await fetch(this._streamUrl(false), {
        headers: sent,
        signal: abort.signal,
        cache: "no-store",
        credentials: withCredentials ? "include" : "same-origin",
      });
    } catch (error) {
      if (gen === this._generation) this._retry(error);
      return;
    }
    if (!response.ok) {
      // 429 and 503 say when to come back; never sooner than that.
      const after = Number(response.headers.get("Retry-After")) * 1000 || 0;
      const body = (await response.text().catch(() => "")).trim();
      if (gen === this._generation) this._retry(new Error(`HTTP ${response.status}: ${body}`), after);
      return;
    }
    const parser = new SSEParser((type, data, id) => {
      if (gen === this._generation) this._dispatch(type, data, id);
    });
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done || gen !== this._generation) break;
        parser.feed(value);
      }
    } catch (error) {
      if (gen === this._generation) this._retry(error);
      return;
    }
    if (gen === this._generation) this._retry(new Error("event stream ended"));
  }

  _dispatch(type, raw, id) {
    if (id) this.lastEventId = id;
    const data = decode(raw);
    if (type === "connected") {
      this.connectionId = data.connection;
      this._attempt = 0; // the daemon answered: the next failure starts the backoff anew
      this._setState(OPEN);
    } else if (type === "reset") {
      for (const h of [...this._resetHandlers]) this._call(h, data);
    }
    const handlers = this._handlers.get(type);
    if (!handlers) return;
    const meta = { type, id: id || null, raw };
    for (const h of [...handlers]) this._call(h, data, meta);
  }

  _call(handler, ...args) {
    try {
      handler(...args);
    } catch (error) {
      report(error);
    }
  }

  _retry(error, minDelayMs = 0) {
    this._teardown();
    if (this._closed) return;
    const { initialDelayMs, maxDelayMs, factor, jitter } = this.options;
    const base = Math.min(maxDelayMs, initialDelayMs * factor ** this._attempt);
    const delayMs = Math.max(minDelayMs, Math.round(base * (1 - jitter * Math.random())));
    this._attempt += 1;
    this._setState(RECONNECTING);
    for (const h of [...this._errorHandlers]) this._call(h, error, { attempt: this._attempt, delayMs });
    this._timer = setTimeout(() => {
      this._timer = null;
      this._open(RECONNECTING);
    }, delayMs);
  }

  _teardown() {
    this._generation += 1;
    clearTimeout(this._timer);
    this._timer = null;
    if (this._source) this._source.close();
    this._source = null;
    if (this._abort) this._abort.abort();
    this._abort = null;
  }

  _setState(state) {
    const previous = this.state;
    if (state === previous) return;
    this.state = state;
    for (const h of [...this._stateHandlers]) this._call(h, state, previous);
  }
}

/** connect(url, options): a FanoutClient that is already connecting. */
export function connect(url = "events", options = {}) {
  return new FanoutClient(url, options);
}
