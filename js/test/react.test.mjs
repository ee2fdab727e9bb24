// useFanout rendered by react-dom in jsdom, against the real daemon: what it renders,
// that it reconnects only when the subscription changes, and that unmounting closes
// its connection (the daemon's own connection count is the witness).
import assert from "node:assert/strict";
import { after, before, beforeEach, afterEach, test } from "node:test";
import { EventSource } from "eventsource";
import { JSDOM } from "jsdom";
import { createElement as h, StrictMode, useEffect } from "react";
import { createRoot } from "react-dom/client";
import { useFanout } from "fanout-client/react";
import { declaredMembers } from "./declared.mjs";
import { Daemon, waitFor } from "./daemon.mjs";

let daemon;
let dom;
let root;
let container;

before(async () => {
  daemon = await new Daemon().start();
  dom = new JSDOM('<!doctype html><div id="root"></div>', { url: `${daemon.base}/app/` });
  globalThis.window = dom.window;
  globalThis.document = dom.window.document;
  globalThis.EventSource = EventSource;
});

after(async () => {
  dom.window.close();
  await daemon.close();
});

beforeEach(() => {
  container = document.createElement("div");
  document.body.append(container);
  root = createRoot(container);
});

afterEach(async () => {
  root.unmount();
  container.remove();
  await daemon.waitConnections(0);
});

const text = (selector) => container.querySelector(selector)?.textContent ?? "";

/** Renders the hook's result as a page would, and hands every result to `results`. */
function Orders({ topics, results, enabled = true }) {
  const result = useFanout("../events", {
    topics,
    enabled,
    event: ["order", "cancel"],
    initial: [],
    // A new function on every render: must not reconnect.
    reducer: (orders, data, meta) =>
      meta.type === "cancel" ? orders.filter((o) => o.id !== data.id) : [...orders, data],
  });
  results.push(result);
  return h(
    "div",
    null,
    h("span", { id: "state" }, result.state),
    h("span", { id: "connection" }, result.connectionId ?? ""),
    h("ul", null, result.data.map((o) => h("li", { key: o.id }, o.name))),
  );
}

test("renders the connection state and the reduced events", async () => {
  const results = [];
  root.render(h(Orders, { topics: ["orders"], results }));
  await waitFor(() => text("#state") === "open", "state open");
  assert.equal(results[0].state, "connecting");
  assert.equal(results[0].client, null); // before the effect ran

  await daemon.publish("orders", { id: 1, name: "tea" }, "order");
  const last = await daemon.publish("orders", { id: 2, name: "cake" }, "order");
  await waitFor(() => text("ul") === "teacake", "both orders");
  await daemon.publish("orders", { id: 1 }, "cancel");
  await waitFor(() => text("ul") === "cake", "the cancel");
  const result = results.at(-1);
  assert.equal(result.state, "open");
  assert.equal(result.error, null);
  assert.equal(result.reset, null);
  assert.equal(result.connectionId, result.client.connectionId);
  assert.notEqual(result.lastEventId, last.id); // the cancel came after it
  assert.equal(result.lastEventId, result.client.lastEventId);
  const declared = [...declaredMembers("../react.d.ts", "UseFanoutResult")].sort();
  assert.deepEqual(Object.keys(result).sort(), declared);
});

test("re-renders keep the connection; new topics replace it and resume", async () => {
  const results = [];
  root.render(h(Orders, { topics: ["orders"], results }));
  await waitFor(() => text("#state") === "open", "state open");
  const first = text("#connection");
  const firstClient = results.at(-1).client;

  // Same topics in a new array, a new reducer: same connection.
  root.render(h(Orders, { topics: ["orders"], results }));
  await daemon.publish("orders", { id: 1, name: "tea" }, "order");
  await waitFor(() => text("ul") === "tea", "tea");
  assert.equal(text("#connection"), first);
  assert.equal(results.at(-1).client, firstClient);

  root.render(h(Orders, { topics: ["orders", "vip"], results }));
  await daemon.publish("vip", { id: 2, name: "champagne" }, "order");
  await waitFor(() => text("ul") === "teachampagne", "the vip order");
  await waitFor(() => text("#state") === "open", "open again");
  assert.notEqual(text("#connection"), first);
  assert.equal(firstClient.state, "closed");
  assert.deepEqual([...results.at(-1).client.topics], ["orders", "vip"]);
  await daemon.waitConnections(1);
});

test("unmounting closes the connection and stops rendering", async () => {
  const results = [];
  root.render(h(Orders, { topics: ["orders"], results }));
  await waitFor(() => text("#state") === "open", "state open");
  await daemon.waitConnections(1);
  const { client } = results.at(-1);

  root.unmount();
  root = createRoot(container); // afterEach unmounts again
  assert.equal(client.state, "closed");
  await daemon.waitConnections(0);
  const renders = results.length;
  await daemon.publish("orders", { id: 3, name: "late" }, "order");
  // A fresh subscriber proves the event was delivered while the unmounted one got nothing.
  const probe = new EventSource(`${daemon.base}/events?topic=orders`);
  await new Promise((resolve) => probe.addEventListener("connected", resolve, { once: true }));
  probe.close();
  assert.equal(results.length, renders);
});

test("enabled: false opens nothing until it becomes true", async () => {
  const results = [];
  root.render(h(Orders, { topics: ["orders"], results, enabled: false }));
  await waitFor(() => text("#state") === "closed", "state closed");
  assert.equal((await daemon.stats()).connections, 0);
  root.render(h(Orders, { topics: ["orders"], results, enabled: true }));
  await waitFor(() => text("#state") === "open", "state open");
  await daemon.waitConnections(1);
});

test("StrictMode's mount, unmount, mount leaves one connection", async () => {
  const results = [];
  root.render(h(StrictMode, null, h(Orders, { topics: ["orders"], results })));
  await waitFor(() => text("#state") === "open", "state open");
  await daemon.waitConnections(1);
  await daemon.publish("orders", { id: 4, name: "soup" }, "order");
  await waitFor(() => text("ul") === "soup", "soup, once");
});

/** Keeps the `connected` event's data: who the daemon thinks the user is. */
function Whoami({ results, onReset, lastEventId }) {
  const result = useFanout("../events", { lastEventId, onReset, topics: ["inbox"], event: "connected" });
  results.push(result);
  return h("span", { id: "user" }, result.data?.user ?? "");
}

test("a new token is used at the next connect, without reconnecting for it", async () => {
  const authed = await new Daemon(
    '[auth]\nmode = "header"\nheader = "Authorization"\n[[listener]]\ntcp = "127.0.0.1:0"\ntrusted = true\n',
  ).start();
  const results = [];
  const other = createRoot(container);
  try {
    // An absolute URL: this daemon is not the page's origin.
    let committed = null;
    const Abs = ({ token }) => {
      const r = useFanout(`${authed.base}/events`, { mode: "fetch", token, event: "connected" });
      results.push({ token, ...r });
      // Runs after the hook's own effects of the same render.
      useEffect(() => {
        committed = token;
      });
      return h("span", { id: "user" }, r.data?.user ?? "");
    };
    other.render(h(Abs, { token: "a" }));
    await waitFor(() => text("#user") === "Bearer a", "user a");
    const { client } = results.at(-1);
    other.render(h(Abs, { token: "b" }));
    await waitFor(() => committed === "b", "the render with token b to commit");
    assert.equal(text("#user"), "Bearer a"); // no reconnect for a new token
    assert.equal(results.at(-1).client, client);
    client.reconnect();
    await waitFor(() => text("#user") === "Bearer b", "user b after the reconnect");
    assert.equal(results.at(-1).client, client);
  } finally {
    other.unmount();
    await authed.close();
  }
});

test("a reset reaches both the result and the onReset callback", async () => {
  const results = [];
  const seen = [];
  root.render(h(Whoami, { results, lastEventId: "1-5", onReset: (info) => seen.push(info.reason) }));
  await waitFor(() => results.at(-1)?.reset, "the reset in the result");
  assert.equal(results.at(-1).reset.reason, "other-epoch");
  assert.deepEqual(seen, ["other-epoch"]);
});
