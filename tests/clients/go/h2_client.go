// An HTTP/2 client built on Go's net/http and crypto/tls, for agent-tracer's end-to-end tests:
// two OpenAI-style chat requests (one answered with JSON, one streamed as server-sent events)
// over one HTTP/2 connection, the way an unmodified Go program would send them.
//
// Usage: h2_client BASE_URL [--wait-stdin]   (BASE_URL e.g. https://127.0.0.1:PORT/v1)
//
// It trusts exactly the PEM file named by SSL_CERT_FILE and prints one JSON line per request:
// {"pid":..., "proto":"HTTP/2.0", "status":..., "body":"<response body as read>"}. With
// --wait-stdin it sends nothing before a line (or EOF) arrives on stdin: the test holds it there
// until the tracer has hooked this executable, which the tracer can only do once the process
// exists, and the HPACK state of the connection must be seen from its first byte.
package main

import (
	"bufio"
	"fmt"
	"net/http"
	"os"

	"testclient"
)

var requestBodies = []string{
	`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello from go over h2"}]}`,
	`{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}],"messages":[{"role":"user","content":"weather in Paris?"}]}`,
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "h2_client:", err)
		os.Exit(1)
	}
}

func run() error {
	url, wait, err := testclient.HeldArgs()
	if err != nil {
		return err
	}
	// HTTP/2 by ALPN h2, as net/http chooses by itself.
	client, err := testclient.NewClient(&http.Transport{ForceAttemptHTTP2: true})
	if err != nil {
		return err
	}
	if wait {
		if err := testclient.WaitForLine(bufio.NewReader(os.Stdin)); err != nil {
			return err
		}
	}
	for _, body := range requestBodies {
		req, err := testclient.NewRequest(url, body, "sk-go-h2-secret")
		if err != nil {
			return err
		}
		withProto := func(resp *http.Response) map[string]interface{} {
			return map[string]interface{}{"proto": resp.Proto}
		}
		if err := testclient.Send(client, req, withProto); err != nil {
			return err
		}
	}
	return nil
}
