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
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"os"
	"strings"
	"time"
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
	client, err := newClient(os.Getenv("SSL_CERT_FILE"))
	if err != nil {
		return err
	}
	stdin := bufio.NewReader(os.Stdin)
	url := strings.TrimSuffix(os.Args[1], "/") + "/chat/completions"
	for _, body := range requestBodies {
		if _, err := stdin.ReadString('\n'); err != nil && err != io.EOF {
			return err
		}
		if err := call(client, url, body); err != nil {
			return err
		}
	}
	return nil
}

func call(client *http.Client, url, body string) error {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewBufferString(body))
	if err != nil {
		return err
	}
	reused := false
	trace := &httptrace.ClientTrace{
		GotConn: func(info httptrace.GotConnInfo) { reused = info.Reused },
	}
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer sk-go-h2-reuse-secret")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	read, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	out, err := json.Marshal(map[string]interface{}{
		"pid":    os.Getpid(),
		"proto":  resp.Proto,
		"status": resp.StatusCode,
		"reused": reused,
		"body":   string(read),
	})
	if err != nil {
		return err
	}
	fmt.Println(string(out))
	return nil
}

// newClient trusts only the certificate in caFile and asks for HTTP/2 (ALPN h2), with plain
// bodies so the bytes on the wire are exactly what the test expects to see captured.
func newClient(caFile string) (*http.Client, error) {
	if caFile == "" {
		return nil, fmt.Errorf("SSL_CERT_FILE is not set")
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("no certificate in %s", caFile)
	}
	transport := &http.Transport{
		TLSClientConfig:    &tls.Config{RootCAs: pool},
		ForceAttemptHTTP2:  true,
		DisableCompression: true,
		Proxy:              nil,
		// The connection must stay open between the two calls, however long the test takes to
		// start the tracer.
		IdleConnTimeout: 10 * time.Minute,
	}
	return &http.Client{Transport: transport, Timeout: 60 * time.Second}, nil
}
