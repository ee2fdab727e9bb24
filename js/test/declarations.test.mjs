// The declarations cover the JavaScript: every option either file reads, every
// export, every public method and field. (tsc --noEmit over types/ checks that the
// declared types are usable and reject misuse.)
import assert from "node:assert/strict";
import { test } from "node:test";
import * as fanout from "fanout-client";
import { clientOptions, declaredMembers, declaredValues, hookOptions } from "./declared.mjs";

const sorted = (set) => [...set].sort();
const publicNames = (names) => names.filter((n) => !n.startsWith("_") && n !== "constructor");

test("every option fanout.js reads is declared in FanoutOptions, and nothing else", () => {
  const options = clientOptions();
  assert.ok(options.has("jitter") && options.has("onReset"), "the source was read");
  assert.deepEqual(sorted(declaredMembers("../fanout.d.ts", "FanoutOptions")), sorted(options));
});

test("ResolvedFanoutOptions has every default", () => {
  const resolved = declaredMembers("../fanout.d.ts", "ResolvedFanoutOptions");
  const client = new fanout.FanoutClient("http://127.0.0.1:9/events", { mode: "fetch" });
  client.close();
  const defaults = Object.keys(client.options);
  assert.deepEqual(sorted(resolved), sorted(defaults));
});

test("every export is declared", () => {
  assert.deepEqual(sorted(declaredValues("../fanout.d.ts")), sorted(Object.keys(fanout)));
});

test("every public method and field of FanoutClient and SSEParser is declared", () => {
  const client = new fanout.FanoutClient("http://127.0.0.1:9/events", { mode: "fetch" });
  client.close();
  const runtime = publicNames([
    ...Object.keys(client),
    ...Object.getOwnPropertyNames(fanout.FanoutClient.prototype),
  ]);
  assert.deepEqual(sorted(declaredMembers("../fanout.d.ts", "FanoutClient")), sorted(runtime));

  const parser = new fanout.SSEParser(() => {});
  const parserNames = publicNames([
    ...Object.keys(parser),
    ...Object.getOwnPropertyNames(fanout.SSEParser.prototype),
  ]);
  assert.deepEqual(sorted(declaredMembers("../fanout.d.ts", "SSEParser")), sorted(parserNames));
});

test("every option useFanout reads is declared", () => {
  const declared = new Set([
    ...declaredMembers("../react.d.ts", "UseFanoutOptions"),
    ...declaredMembers("../fanout.d.ts", "FanoutOptions"),
  ]);
  const read = hookOptions();
  assert.ok(read.has("reducer"), "the hook's source was read");
  for (const name of read) assert.ok(declared.has(name), `useFanout option ${name} is not declared`);
});
