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
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
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
	wait := len(os.Args) == 3 && os.Args[2] == "--wait-stdin"
	if len(os.Args) != 2 && !wait {
		return fmt.Errorf("usage: %s BASE_URL [--wait-stdin]", os.Args[0])
	}
	client, err := newClient(os.Getenv("SSL_CERT_FILE"))
	if err != nil {
		return err
	}
	if wait {
		if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil && err != io.EOF {
			return err
		}
	}
	url := strings.TrimSuffix(os.Args[1], "/") + "/chat/completions"
	for _, body := range requestBodies {
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
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer sk-go-h2-secret")
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
	}
	return &http.Client{Transport: transport, Timeout: 60 * time.Second}, nil
}
