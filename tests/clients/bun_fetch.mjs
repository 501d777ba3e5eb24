// An unmodified Bun program: fetch (Bun's own HTTP client over uSockets and its statically linked,
// stripped BoringSSL) POSTs a streaming chat request and reads the server-sent events as they
// arrive. Trust comes from NODE_EXTRA_CA_CERTS, which Bun honours like node.
// usage: bun bun_fetch.mjs BASE_URL
const base = process.argv[2];
const body = JSON.stringify({
  model: "gpt-4o-mini",
  stream: true,
  stream_options: { include_usage: true },
  messages: [{ role: "user", content: "hello from bun" }],
});
const response = await fetch(`${base}/chat/completions`, {
  method: "POST",
  // identity: the recorded response bytes must equal the text the client prints.
  headers: { "content-type": "application/json", authorization: "Bearer sk-bun-secret", "accept-encoding": "identity" },
  body,
});
const reader = response.body.getReader();
const decoder = new TextDecoder();
let text = "";
let chunks = 0;
for (;;) {
  const { done, value } = await reader.read();
  if (done) break;
  chunks += 1;
  text += decoder.decode(value, { stream: true });
}
console.log(JSON.stringify({ pid: process.pid, status: response.status, request_body: body, body: text, streamed: chunks > 1 }));
