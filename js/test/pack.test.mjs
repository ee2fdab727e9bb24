// `npm pack` produces the package, a fresh project installs the tarball (and, as the
// README says, the repository folder) and imports it; the packed fanout.js is the very
// file the daemon serves at /fanout.js, so the two can never diverge.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { CLIENT_SOURCE } from "./declared.mjs";
import { Daemon, REPO } from "./daemon.mjs";

const JS = fileURLToPath(new URL("../", import.meta.url));
const TSC = join(JS, "node_modules", "typescript", "bin", "tsc");
const REACT_VERSION = JSON.parse(readFileSync(join(JS, "node_modules", "react", "package.json"), "utf8")).version;
const npm = (args, cwd) => execFileSync("npm", args, { cwd, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });

let work;
let packed;
let tarball;

before(() => {
  work = mkdtempSync("/tmp/fo-pack-");
  [packed] = JSON.parse(npm(["pack", "--json", "--pack-destination", work], JS));
  tarball = join(work, packed.filename);
});

after(() => rmSync(work, { recursive: true, force: true }));

function project(name) {
  const dir = join(work, name);
  execFileSync("mkdir", ["-p", dir]);
  writeFileSync(join(dir, "package.json"), JSON.stringify({ name, private: true, type: "module" }));
  return dir;
}

function run(dir, code) {
  return execFileSync(process.execPath, ["--input-type=module", "-e", code], { cwd: dir, encoding: "utf8" });
}

test("npm pack produces the tarball with the client, the hook and their types", () => {
  const files = packed.files.map((f) => f.path).sort();
  assert.deepEqual(files, ["README.md", "fanout.d.ts", "fanout.js", "package.json", "react.d.ts", "react.js"]);
  const pkg = JSON.parse(readFileSync(join(JS, "package.json"), "utf8"));
  const python = readFileSync(join(REPO, "fanout", "__init__.py"), "utf8").match(/__version__ = "(.+)"/)[1];
  assert.equal(pkg.version, python, "the npm package and the daemon share a version");
  assert.equal(packed.filename, `fanout-client-${python}.tgz`);
});

test("the installed tarball imports, with types, and its fanout.js is the daemon's", async () => {
  const dir = project("from-tarball");
  // react from npm's cache (npm ci in js/ put it there): the hook's peer dependency.
  npm(["install", "--no-audit", "--no-fund", "--prefer-offline", tarball, `react@${REACT_VERSION}`], dir);
  const out = run(
    dir,
    `const m = await import("fanout-client"); const r = await import("fanout-client/react");
     console.log(JSON.stringify([Object.keys(m).sort(), Object.keys(r)]))`,
  );
  assert.deepEqual(JSON.parse(out), [
    ["CLOSED", "CONNECTING", "FanoutClient", "OPEN", "RECONNECTING", "SSEParser", "connect"],
    ["useFanout"],
  ]);

  const installed = readFileSync(join(dir, "node_modules", "fanout-client", "fanout.js"));
  assert.ok(installed.equals(readFileSync(CLIENT_SOURCE)), "packed fanout.js differs from fanout/static/fanout.js");
  const daemon = await new Daemon().start();
  try {
    const served = Buffer.from(await (await fetch(`${daemon.base}/fanout.js`)).arrayBuffer());
    assert.ok(installed.equals(served), "packed fanout.js differs from the daemon's /fanout.js");
  } finally {
    await daemon.close();
  }

  // The shipped declarations resolve from a consumer's project and type-check its code.
  writeFileSync(join(dir, "usage.ts"), readFileSync(join(JS, "types", "usage.ts")));
  writeFileSync(
    join(dir, "tsconfig.json"),
    JSON.stringify({
      compilerOptions: { strict: true, noEmit: true, module: "nodenext", lib: ["es2022", "dom"], types: [] },
      files: ["usage.ts"],
    }),
  );
  execFileSync(process.execPath, [TSC, "-p", "tsconfig.json"], { cwd: dir, encoding: "utf8" });
});

test("npm install from the repository folder links the package", () => {
  const dir = project("from-folder");
  npm(["install", "--no-audit", "--no-fund", "--prefer-offline", JS], dir);
  const out = run(dir, `const { connect } = await import("fanout-client"); console.log(typeof connect)`);
  assert.equal(out.trim(), "function");
});
