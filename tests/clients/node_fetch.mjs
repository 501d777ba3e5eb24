// An unmodified Node program: global fetch (undici over node's statically linked OpenSSL) POSTs a
// chat request and prints what it got. Trust comes from NODE_EXTRA_CA_CERTS.
// usage: node node_fetch.mjs BASE_URL
const base = process.argv[2];
const body = JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: "hello from node" }] });
const response = await fetch(`${base}/chat/completions`, {
  method: "POST",
  // identity: the recorded response bytes must equal the text the client prints.
  headers: { "content-type": "application/json", authorization: "Bearer sk-node-secret", "accept-encoding": "identity" },
  body,
});
const text = await response.text();
console.log(JSON.stringify({ pid: process.pid, status: response.status, request_body: body, body: text }));
