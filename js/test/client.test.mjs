// fanout.js (imported by its package name) against the real daemon, in both
// transports. Node has no EventSource: the `eventsource` package stands in for the
// browser's, as a WHATWG-conformant implementation.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { EventSource } from "eventsource";
import { CLOSED, connect, FanoutClient, OPEN, RECONNECTING, SSEParser } from "fanout-client";
import { Daemon, waitFor } from "./daemon.mjs";

globalThis.EventSource = EventSource;

function record(client, ...types) {
  const seen = { states: [], resets: [], errors: [] };
  for (const type of types) {
    seen[type] = [];
    client.on(type, (data, meta) => seen[type].push({ data, meta }));
  }
  client.onState((state, previous) => seen.states.push([previous, state]));
  client.onReset((info) => seen.resets.push(info));
  client.onError((error, retry) => seen.errors.push({ error, retry }));
  return seen;
}

describe("eventsource transport", () => {
  let daemon;
  before(async () => {
    daemon = await new Daemon().start();
  });
  after(async () => {
    await daemon.close();
  });

  test("connects, decodes events with their ids, and closes", async () => {
    const client = connect(`${daemon.base}/events`, { topics: ["orders"] });
    assert.ok(client instanceof FanoutClient);
    const seen = record(client, "connected", "order");
    await waitFor(() => client.state === OPEN, "open");
    // Handlers added after connect() see the states from the one it started in.
    assert.deepEqual(seen.states, [["connecting", "open"]]);
    assert.equal(seen.connected[0].data.connection, client.connectionId);
    assert.deepEqual(seen.connected[0].data.topics, ["orders"]);

    const published = await daemon.publish("orders", { id: 7, total: 12.5 }, "order");
    await waitFor(() => seen.order.length === 1, "the order event");
    assert.deepEqual(seen.order[0].data, { id: 7, total: 12.5 });
    assert.deepEqual(seen.order[0].meta, {
      type: "order",
      id: published.id,
      raw: '{"id":7,"total":12.5}',
    });
    assert.equal(client.lastEventId, published.id);

    client.close();
    assert.equal(client.state, CLOSED);
    await daemon.waitConnections(0);
    await daemon.publish("orders", { id: 8 }, "order");
    assert.equal(seen.order.length, 1);
  });

  test("addTopics resumes: nothing published meanwhile is missed", async () => {
    const client = connect(`${daemon.base}/events`, { topics: ["a"] });
    const seen = record(client, "tick");
    await waitFor(() => client.state === OPEN, "open");
    await daemon.publish("a", 1, "tick");
    await waitFor(() => seen.tick.length === 1, "tick 1");
    client.addTopics("b");
    // Published while the client reconnects: replayed from its last id.
    await daemon.publish("a", 2, "tick");
    await daemon.publish("b", 3, "tick");
    await waitFor(() => seen.tick.length === 3, "ticks 2 and 3");
    assert.deepEqual(seen.tick.map((e) => e.data), [1, 2, 3]);
    assert.deepEqual([...client.topics], ["a", "b"]);
    assert.equal(seen.resets.length, 0);
    client.removeTopics("a");
    await waitFor(() => client.state === OPEN, "open again");
    await daemon.publish("a", 4, "tick");
    await daemon.publish("b", 5, "tick");
    await waitFor(() => seen.tick.length === 4, "tick 5");
    assert.deepEqual(seen.tick.map((e) => e.data), [1, 2, 3, 5]);
    client.close();
  });

  test("an id from another run is reported through onReset", async () => {
    const client = connect(`${daemon.base}/events`, { topics: ["a"], lastEventId: "1-5" });
    const seen = record(client);
    await waitFor(() => seen.resets.length === 1, "the reset");
    assert.equal(seen.resets[0].reason, "other-epoch");
    assert.equal(seen.resets[0].lastEventId, "1-5");
    assert.match(seen.resets[0].message, /refetch your state/);
    client.close();
  });
});

describe("fetch transport", () => {
  let daemon;
  before(async () => {
    // The daemon takes the user from Authorization here, so the connected event
    // shows what the client really sent.
    daemon = await new Daemon(
      '[auth]\nmode = "header"\nheader = "Authorization"\n[[listener]]\ntcp = "127.0.0.1:0"\ntrusted = true\n',
    ).start();
  });
  after(async () => {
    await daemon.close();
  });

  test("sends the token, resumes with Last-Event-ID and backs off when the daemon is gone", async () => {
    let calls = 0;
    const client = connect(`${daemon.base}/events`, {
      mode: "fetch",
      topics: ["inbox"],
      token: async () => `tok-${++calls}`,
      initialDelayMs: 50,
      maxDelayMs: 200,
    });
    const seen = record(client, "connected", "mail");
    await waitFor(() => client.state === OPEN, "open");
    assert.equal(seen.connected[0].data.user, "Bearer tok-1");
    const first = await daemon.publish("inbox", { subject: "hi" }, "mail");
    await waitFor(() => seen.mail.length === 1, "mail");
    assert.equal(seen.mail[0].meta.id, first.id);

    client.reconnect();
    await waitFor(() => seen.connected.length === 2, "the second connect");
    assert.equal(seen.connected[1].data.user, "Bearer tok-2"); // the token is fetched anew

    await daemon.stop();
    await waitFor(() => seen.errors.length >= 2, "two failed retries");
    assert.equal(client.state, RECONNECTING);
    assert.deepEqual(seen.errors.map((e) => e.retry.attempt).slice(0, 2), [1, 2]);
    for (const { retry } of seen.errors) assert.ok(retry.delayMs <= 200, `delay ${retry.delayMs}`);
    client.close();
    assert.equal(client.state, CLOSED);
  });
});

test("SSEParser follows the WHATWG grammar across chunk boundaries", () => {
  const events = [];
  const parser = new SSEParser((type, data, id) => events.push([type, data, id]));
  for (const chunk of ["id: 1\r", "\nevent: a\ndata: x\nda", "ta:  y\n\n: hb\n\ndata:z\r\n\r\n"]) {
    parser.feed(chunk);
  }
  assert.deepEqual(events, [
    ["a", "x\n y", "1"],
    ["message", "z", "1"],
  ]);
});
