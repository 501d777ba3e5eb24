// An HTTP/2 client built on Go's net/http and crypto/tls, for agent-tracer's end-to-end tests of
// a connection the tracer joins after it started: three OpenAI-style chat requests (answered
// with JSON, streamed as server-sent events, JSON again) over one HTTP/2 connection, each sent
// only once a line arrives on stdin. The test lets the first one go before the tracer runs and
// the others once it has hooked this executable, so the tracer sees the connection from the
// middle: no preface, and an HPACK table the first request filled (Go's encoder indexes the
// fields it sends and refers to them the next time).
//
// Usage: h2_reuse_client BASE_URL   (BASE_URL e.g. https://127.0.0.1:PORT/v1)
//
// It trusts exactly the PEM file named by SSL_CERT_FILE and prints one JSON line per request:
// {"pid":..., "proto":"HTTP/2.0", "status":..., "reused":<the connection was reused>,
// "body":"<response body as read>"}.
package main

import (
	"bufio"
	"fmt"
	"net/http"
	"net/http/httptrace"
	"os"
	"time"

	"testclient"
)

var requestBodies = []string{
	`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"first call, before the tracer"}]}`,
	`{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}],"messages":[{"role":"user","content":"weather in Paris?"}]}`,
	`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"third call, on the joined connection"}]}`,
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "h2_reuse_client:", err)
		os.Exit(1)
	}
}

func run() error {
	if len(os.Args) != 2 {
		return fmt.Errorf("usage: %s BASE_URL", os.Args[0])
	}
	client, err := testclient.NewClient(&http.Transport{
		// HTTP/2 by ALPN h2, as net/http chooses by itself.
		ForceAttemptHTTP2: true,
		// The connection must stay open between the two calls, however long the test takes to
		// start the tracer.
		IdleConnTimeout: 10 * time.Minute,
	})
	if err != nil {
		return err
	}
	stdin := bufio.NewReader(os.Stdin)
	url := testclient.ChatURL(os.Args[1])
	for _, body := range requestBodies {
		if err := testclient.WaitForLine(stdin); err != nil {
			return err
		}
		if err := call(client, url, body); err != nil {
			return err
		}
	}
	return nil
}

// call sends one request and reports, besides what every client does, whether it went on a
// connection an earlier request opened.
func call(client *http.Client, url, body string) error {
	req, err := testclient.NewRequest(url, body, "sk-go-h2-reuse-secret")
	if err != nil {
		return err
	}
	reused := false
	trace := &httptrace.ClientTrace{
		GotConn: func(info httptrace.GotConnInfo) { reused = info.Reused },
	}
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
	return testclient.Send(client, req, func(resp *http.Response) map[string]interface{} {
		return map[string]interface{}{"proto": resp.Proto, "reused": reused}
	})
}
