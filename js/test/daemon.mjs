// Starts the real fanout daemon for a test: `python -m fanout serve` on port 0, with
// its control socket in a short temp dir, and talks to that socket like a publisher.
import { spawn } from "node:child_process";
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

export const REPO = fileURLToPath(new URL("../../", import.meta.url));
const VENV_PYTHON = join(REPO, ".venv", "bin", "python");
// tests/run.sh sets FANOUT_PYTHON; by hand, the repository's .venv is used.
export const PYTHON = process.env.FANOUT_PYTHON || (existsSync(VENV_PYTHON) ? VENV_PYTHON : "python3");
const START_DEADLINE_MS = 15_000;

/** Poll `predicate` until it returns a truthy value, or fail after `timeoutMs`. */
export async function waitFor(predicate, what, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await predicate();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

function control(socketPath, method, path, body) {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = request(
      {
        socketPath,
        method,
        path,
        headers: payload ? { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(payload) } : {},
      },
      (res) => {
        const chunks = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString();
          if (res.statusCode >= 400) reject(new Error(`${method} ${path}: ${res.statusCode} ${text}`));
          else resolve(res.headers["content-type"]?.startsWith("application/json") ? JSON.parse(text) : text);
        });
      },
    );
    req.on("error", reject);
    req.end(payload);
  });
}

export class Daemon {
  /** `extraToml` is appended to the config (top-level keys must come first: use tables). */
  constructor(extraToml = "") {
    this.dir = mkdtempSync("/tmp/fo-js-");
    this.socket = join(this.dir, "c.sock");
    this.configPath = join(this.dir, "fanout.toml");
    writeFileSync(
      this.configPath,
      `[control]\nsocket = "${this.socket}"\n[stream]\nshutdown_timeout_s = 2.0\n${extraToml}\n` +
        (extraToml.includes("[[listener]]") ? "" : `[[listener]]\ntcp = "127.0.0.1:0"\n`),
    );
    this.logPath = join(this.dir, "daemon.log");
    this.proc = null;
    this.port = 0;
  }

  get base() {
    return `http://127.0.0.1:${this.port}`;
  }

  get log() {
    return existsSync(this.logPath) ? readFileSync(this.logPath, "utf8") : "";
  }

  async start() {
    const fd = openSync(this.logPath, "a");
    this.proc = spawn(PYTHON, ["-m", "fanout", "serve", "-c", this.configPath], {
      cwd: this.dir,
      stdio: ["ignore", fd, fd],
    });
    closeSync(fd);
    let exited = null;
    this.proc.once("exit", (code) => (exited = code));
    const stats = await waitFor(
      async () => {
        if (exited !== null) throw new Error(`daemon exited with ${exited}:\n${this.log}`);
        return this.stats().catch(() => null);
      },
      "the daemon to start",
      START_DEADLINE_MS,
    );
    const tcp = stats.listeners.find((u) => u.startsWith("http://"));
    this.port = Number(tcp.slice(tcp.lastIndexOf(":") + 1));
    return this;
  }

  stats() {
    return control(this.socket, "GET", "/stats");
  }

  metrics() {
    return control(this.socket, "GET", "/metrics");
  }

  publish(topic, data, event = "message") {
    return control(this.socket, "POST", "/publish", { topic, data, event });
  }

  async waitConnections(n) {
    await waitFor(async () => (await this.stats()).connections === n, `${n} connections`);
  }

  async stop() {
    const proc = this.proc;
    if (proc && proc.exitCode === null && proc.signalCode === null) {
      const exited = new Promise((resolve) => proc.once("exit", resolve));
      proc.kill("SIGTERM");
      const timer = setTimeout(() => proc.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(timer);
    }
    this.proc = null;
  }

  async close() {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
