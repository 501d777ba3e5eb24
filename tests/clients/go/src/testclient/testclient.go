// Package testclient is what agent-tracer's end-to-end Go clients share: an HTTPS client that
// trusts exactly the test's certificate, and one chat request sent and reported the same way.
// The clients import it in GOPATH mode (tests/clients/go is on the GOPATH the testkit's
// go::build sets), so each stays a single standard-library-only file to build.
package testclient

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

// HeldArgs reads the command line of a client the test may hold before its requests,
// BASE_URL [--wait-stdin]: it returns the chat completions URL and whether to wait for a line
// on stdin first (see WaitForLine).
func HeldArgs() (url string, wait bool, err error) {
	wait = len(os.Args) == 3 && os.Args[2] == "--wait-stdin"
	if len(os.Args) != 2 && !wait {
		return "", false, fmt.Errorf("usage: %s BASE_URL [--wait-stdin]", os.Args[0])
	}
	return ChatURL(os.Args[1]), wait, nil
}

// ChatURL is the chat completions endpoint under baseURL (e.g. https://127.0.0.1:PORT/v1).
func ChatURL(baseURL string) string {
	return strings.TrimSuffix(baseURL, "/") + "/chat/completions"
}

// NewClient completes transport with a TLS configuration that trusts only the PEM certificate
// named by SSL_CERT_FILE, no proxy, and plain bodies, so the bytes on the wire are exactly what
// the test expects to see captured.
func NewClient(transport *http.Transport) (*http.Client, error) {
	caFile := os.Getenv("SSL_CERT_FILE")
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
	transport.TLSClientConfig = &tls.Config{RootCAs: pool}
	transport.DisableCompression = true
	transport.Proxy = nil
	return &http.Client{Transport: transport, Timeout: 60 * time.Second}, nil
}

// WaitForLine returns once a line (or EOF) arrives on stdin: the test holds a client there
// until the tracer has hooked its executable, which it can only do once the process exists.
func WaitForLine(stdin *bufio.Reader) error {
	if _, err := stdin.ReadString('\n'); err != nil && err != io.EOF {
		return err
	}
	return nil
}

// NewRequest is an OpenAI-style chat request: body POSTed as JSON with apiKey as the bearer.
func NewRequest(url, body, apiKey string) (*http.Request, error) {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewBufferString(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+apiKey)
	return req, nil
}

// Send sends req and prints one JSON line: the process id, the response's status and its body
// as read, and the fields more gives for the response (more may be nil).
func Send(client *http.Client, req *http.Request, more func(*http.Response) map[string]interface{}) error {
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	read, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	line := map[string]interface{}{}
	if more != nil {
		line = more(resp)
	}
	line["pid"] = os.Getpid()
	line["status"] = resp.StatusCode
	line["body"] = string(read)
	out, err := json.Marshal(line)
	if err != nil {
		return err
	}
	fmt.Println(string(out))
	return nil
}
