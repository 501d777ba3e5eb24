// Written by `cargo xtask bench`: N chat-completion POSTs over one keep-alive HTTPS connection,
// with node's `https` module (node's own statically linked OpenSSL, which the tracer hooks).
//
// Usage: node tls_client.mjs PORT CERT_PEM N WARMUP
// Waits for one line (or EOF) on stdin before the first request, then prints one JSON line:
// {"requests": N, "seconds": ..., "p50_us": ..., "p99_us": ..., "rps": ..., "connections": 1}
import fs from "node:fs";
import https from "node:https";

const [port, cert, n, warmup] = [
  Number(process.argv[2]),
  process.argv[3],
  Number(process.argv[4]),
  Number(process.argv[5]),
];
const agent = new https.Agent({ keepAlive: true, maxSockets: 1 });
const ca = fs.readFileSync(cert);
const body = JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: "hi" }] });
const options = {
  host: "127.0.0.1",
  port,
  method: "POST",
  path: "/v1/chat/completions",
  agent,
  ca,
  headers: {
    "Content-Type": "application/json",
    "Content-Length": Buffer.byteLength(body),
    Authorization: "Bearer sk-bench-not-a-secret",
  },
};

const sockets = new Set();

function once() {
  return new Promise((resolve, reject) => {
    const req = https.request(options, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => {
        if (res.statusCode !== 200) {
          reject(new Error(`HTTP ${res.statusCode}: ${Buffer.concat(chunks).toString().slice(0, 200)}`));
        } else {
          resolve();
        }
      });
      res.on("error", reject);
    });
    req.on("socket", (s) => sockets.add(s));
    req.setTimeout(30000, () => req.destroy(new Error("timeout")));
    req.on("error", reject);
    req.end(body);
  });
}

function waitForStart() {
  return new Promise((resolve) => {
    const done = () => {
      process.stdin.pause();
      resolve();
    };
    process.stdin.once("data", done);
    process.stdin.once("end", done);
    process.stdin.once("error", done);
  });
}

function percentile(sorted, p) {
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return Number(sorted[i]) / 1000;
}

async function main() {
  await waitForStart();
  for (let i = 0; i < warmup; i++) await once();
  const latencies = [];
  const start = process.hrtime.bigint();
  for (let i = 0; i < n; i++) {
    const t = process.hrtime.bigint();
    await once();
    latencies.push(process.hrtime.bigint() - t);
  }
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  agent.destroy();
  latencies.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  console.log(
    JSON.stringify({
      requests: n,
      seconds,
      p50_us: percentile(latencies, 50),
      p99_us: percentile(latencies, 99),
      rps: n / seconds,
      connections: sockets.size,
    }),
  );
}

main().catch((e) => {
  console.error(`tls_client.mjs: ${e.stack || e}`);
  process.exit(1);
});
