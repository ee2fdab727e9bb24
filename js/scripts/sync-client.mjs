// fanout.js has one source: fanout/static/fanout.js, the file the daemon serves at
// /fanout.js and the Python wheel ships. This copies it into the package; npm runs
// it as `prepare`, that is on `npm install` / `npm ci` in js/ and before `npm pack`.
// js/fanout.js is git-ignored: edit the source, never the copy.
import { copyFileSync, existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

const source = fileURLToPath(new URL("../../fanout/static/fanout.js", import.meta.url));
const target = fileURLToPath(new URL("../fanout.js", import.meta.url));

if (!existsSync(source)) {
  console.error(`fanout-client: ${source} is missing; build the package from the fanout repository`);
  process.exit(1);
}
copyFileSync(source, target);
