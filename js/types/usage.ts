// A typed use of the package, compiled with `tsc --noEmit` (npm run typecheck): the
// declarations must accept this, and reject each line marked @ts-expect-error.
import {
  CLOSED,
  connect,
  FanoutClient,
  OPEN,
  SSEParser,
  type EventMeta,
  type FanoutOptions,
  type FanoutState,
  type ResetInfo,
} from "fanout-client";

interface Progress {
  status: "pending" | "running" | "completed" | "failed";
  progress: number;
  message: string;
}

const options: FanoutOptions = {
  topics: new Set(["orders", "progress:job-42"]),
  mode: "fetch",
  token: async () => "secret",
  headers: { "X-Tenant": "acme" },
  withCredentials: true,
  lastEventId: null,
  initialDelayMs: 250,
  maxDelayMs: 10_000,
  factor: 1.5,
  jitter: 0.3,
  onState: (state: FanoutState, previous: FanoutState) => console.log(previous, "->", state),
  onReset: (info: ResetInfo) => console.log(info.reason, info.oldestId),
  onError: (error, { attempt, delayMs }) => console.log(error.message, attempt, delayMs),
};

const client: FanoutClient = connect("/events", options);
const off: () => boolean = client.on<Progress>("progress", (data, meta: EventMeta) => {
  const percent: number = data.progress;
  const id: string | null = meta.id;
  console.log(percent, data.status, id, meta.raw.length);
});
client.on("connected", (info) => {
  const connection: string = info.connection;
  const user: string | null = info.user;
  console.log(connection, user, info.topics.join());
});
client.on("reset", (info) => {
  if (info.reason === "other-epoch") client.reconnect({ fresh: true });
});
client.onState((state) => {
  if (state === OPEN || state === CLOSED) console.log(state);
});
client.addTopics("inbox", "alerts");
client.removeTopics("orders");
client.reconnect();
const last: string | null = client.lastEventId;
const topics: Set<string> = client.topics;
console.log(last, topics.size, client.state, client.connectionId, client.options.maxDelayMs);
off();
client.close();

const parser = new SSEParser((type, data, id) => console.log(type.length, data.length, id.length));
parser.feed("data: 1\n\n");

// @ts-expect-error: no such transport
connect("/events", { mode: "websocket" });
// @ts-expect-error: topics are strings
connect("/events", { topics: [1, 2] });
// @ts-expect-error: a list of topics, not one string (which would be split into letters)
connect("/events", { topics: "orders" });
// @ts-expect-error: a reset handler gets ResetInfo, whose reason is a known string
client.onReset((info) => info.reason === "timeout");
// @ts-expect-error: state is read-only
client.state = "open";
// @ts-expect-error: the retry info has no such field
client.onError((_e, retry) => retry.seconds);
