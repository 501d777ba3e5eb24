// An HTTPS client built on Go's crypto/tls, for agent-tracer's end-to-end tests: one OpenAI-style
// chat request over HTTP/1.1, the way an unmodified Go program would send it.
//
// Usage: https_client BASE_URL [--wait-stdin]   (BASE_URL e.g. https://127.0.0.1:PORT/v1)
//
// It trusts exactly the PEM file named by SSL_CERT_FILE and prints one JSON line:
// {"pid":..., "status":..., "body":"<response body as read>"}. With --wait-stdin it sends
// nothing before a line (or EOF) arrives on stdin: the test holds it there until the tracer has
// hooked this executable, which the tracer can only do once the process exists.
package main

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net/http"
	"os"

	"testclient"
)

const requestBody = `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello from go"}]}`

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "https_client:", err)
		os.Exit(1)
	}
}

func run() error {
	url, wait, err := testclient.HeldArgs()
	if err != nil {
		return err
	}
	// HTTP/1.1 only: a non-nil, empty TLSNextProto turns HTTP/2 off entirely.
	client, err := testclient.NewClient(&http.Transport{
		ForceAttemptHTTP2: false,
		TLSNextProto:      map[string]func(string, *tls.Conn) http.RoundTripper{},
	})
	if err != nil {
		return err
	}
	if wait {
		if err := testclient.WaitForLine(bufio.NewReader(os.Stdin)); err != nil {
			return err
		}
	}
	req, err := testclient.NewRequest(url, requestBody, "sk-go-secret")
	if err != nil {
		return err
	}
	return testclient.Send(client, req, nil)
}
