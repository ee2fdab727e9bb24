// useFanout: a React hook over fanout.js, in the style of a useSSE hook.
//
//   const { data, state } = useFanout("/events", { topics: [`progress:${id}`], event: "progress" });
//
// One FanoutClient per mounted component: opened in an effect, closed by that effect's
// cleanup (on unmount, and before reconnecting when the url, the topics, the event
// types or the connection options change). Callbacks (reducer, onReset, onError,
// onState, token) are read from a ref, so passing new functions each render does not
// reconnect.
import { useEffect, useRef, useState } from "react";
import { CLOSED, CONNECTING, FanoutClient } from "./fanout.js";

const keep = (_previous, data) => data;

function listOf(value, fallback) {
  if (value == null) return fallback;
  return typeof value === "string" ? [value] : [...value];
}

export function useFanout(url, options = {}) {
  const {
    topics,
    event,
    initial = null,
    reducer,
    enabled = true,
    lastEventId,
    onState,
    onReset,
    onError,
    token,
    ...connection // mode, headers, withCredentials, initialDelayMs, maxDelayMs, factor, jitter
  } = options;
  // The callbacks of the latest render, for the client's handlers to call. Updated in
  // an effect (not during render, which React may run and throw away); declared before
  // the connection's effect, so a new client already sees this render's callbacks.
  const latest = useRef({ reducer, onState, onReset, onError, token });
  useEffect(() => {
    latest.current = { reducer, onState, onReset, onError, token };
  });

  const [data, setData] = useState(initial);
  const [state, setState] = useState(enabled ? CONNECTING : CLOSED);
  const [ids, setIds] = useState({ lastEventId: lastEventId ?? null, connectionId: null });
  const [reset, setReset] = useState(null);
  const [error, setError] = useState(null);
  const [client, setClient] = useState(null);

  // What a new connection depends on, as strings, so equal values in new arrays or
  // objects on each render do not reconnect.
  const topicKey = JSON.stringify(listOf(topics, []));
  const eventKey = JSON.stringify(listOf(event, ["message"]));
  const connectionKey = JSON.stringify(connection);
  const urlKey = String(url);
  const hasToken = token !== undefined;
  // Resume across reconnects of this hook (new topics) from the last id seen.
  const resumeFrom = useRef(lastEventId ?? null);

  useEffect(() => {
    if (!enabled) {
      setState(CLOSED);
      return undefined;
    }
    const call = (name, ...args) => {
      const fn = latest.current[name];
      if (typeof fn === "function") fn(...args);
    };
    const tokenOption = !hasToken ? {} : {
      // Read at each connect, so a token passed anew on a later render is used.
      token: () => {
        const value = latest.current.token;
        return typeof value === "function" ? value() : value;
      },
    };
    const fanout = new FanoutClient(urlKey, {
      ...JSON.parse(connectionKey),
      ...tokenOption,
      topics: JSON.parse(topicKey),
      lastEventId: resumeFrom.current,
      onState: (next, previous) => {
        setState(next);
        call("onState", next, previous);
      },
      onReset: (info) => {
        setReset(info);
        call("onReset", info);
      },
      onError: (err, retry) => {
        setError(err);
        call("onError", err, retry);
      },
    });
    const offs = [
      fanout.on("connected", (info) => {
        setError(null);
        setIds({ lastEventId: fanout.lastEventId, connectionId: info.connection });
      }),
    ];
    for (const type of JSON.parse(eventKey)) {
      offs.push(
        fanout.on(type, (payload, meta) => {
          resumeFrom.current = fanout.lastEventId;
          setIds({ lastEventId: fanout.lastEventId, connectionId: fanout.connectionId });
          const reduce = latest.current.reducer || keep;
          setData((previous) => reduce(previous, payload, meta));
        }),
      );
    }
    setClient(fanout);
    return () => {
      resumeFrom.current = fanout.lastEventId;
      for (const off of offs) off();
      fanout.close();
      setClient(null);
    };
    // The token's value is read through the ref at each connect: only its presence
    // decides the client's options.
  }, [urlKey, topicKey, eventKey, connectionKey, enabled, hasToken]);

  return { data, state, reset, error, client, ...ids };
}
