// An unmodified Deno program: fetch (Deno's own HTTP client over rustls with aws-lc-rs, in a
// stripped 100 MB executable) POSTs a chat request and prints what it got. Trust comes from
// --cert. It sends nothing before a line arrives on stdin: the test holds it there until the
// tracer has hooked the deno executable, which it can only do once the process exists.
// usage: deno run --allow-net --cert CA.pem deno_fetch.ts BASE_URL
const base = Deno.args[0];
await Deno.stdin.read(new Uint8Array(64));
const body = JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: "hello from deno" }] });
const response = await fetch(`${base}/chat/completions`, {
  method: "POST",
  // identity: the recorded response bytes must equal the text the client prints.
  headers: { "content-type": "application/json", authorization: "Bearer sk-rustls-secret", "accept-encoding": "identity" },
  body,
});
const text = await response.text();
console.log(JSON.stringify({ pid: Deno.pid, status: response.status, request_body: body, body: text }));
