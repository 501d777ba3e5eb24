// Written by `cargo xtask bench`: N chat-completion POSTs over one keep-alive HTTPS connection,
// with Go's net/http and crypto/tls (which the tracer hooks), forced to HTTP/1.1.
//
// Usage: tls_client PORT CERT_PEM N WARMUP
// Waits for one line (or EOF) on stdin before the first request, then prints one JSON line:
// {"requests": N, "seconds": ..., "p50_us": ..., "p99_us": ..., "rps": ..., "connections": 1}
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"sync/atomic"
	"time"
)

const requestBody = `{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}`

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "tls_client:", err)
		os.Exit(1)
	}
}

func run() error {
	if len(os.Args) != 5 {
		return fmt.Errorf("usage: %s PORT CERT_PEM N WARMUP", os.Args[0])
	}
	port := os.Args[1]
	n, err := strconv.Atoi(os.Args[3])
	if err != nil || n < 1 {
		return fmt.Errorf("bad N %q", os.Args[3])
	}
	warmup, err := strconv.Atoi(os.Args[4])
	if err != nil || warmup < 0 {
		return fmt.Errorf("bad WARMUP %q", os.Args[4])
	}
	pem, err := os.ReadFile(os.Args[2])
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return fmt.Errorf("no certificate in %s", os.Args[2])
	}
	var connections int64
	dialer := &net.Dialer{Timeout: 30 * time.Second}
	transport := &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool},
		MaxIdleConnsPerHost: 1,
		DisableCompression:  true,
		// A non-nil, empty map turns HTTP/2 off entirely.
		TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{},
		Proxy:        nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			atomic.AddInt64(&connections, 1)
			return dialer.DialContext(ctx, network, addr)
		},
	}
	client := &http.Client{Transport: transport, Timeout: 30 * time.Second}
	url := "https://127.0.0.1:" + port + "/v1/chat/completions"
	body := []byte(requestBody)
	once := func() error {
		req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer sk-bench-not-a-secret")
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		data, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			if len(data) > 200 {
				data = data[:200]
			}
			return fmt.Errorf("HTTP %d: %q", resp.StatusCode, data)
		}
		return nil
	}

	// Held here until the caller says go (the tracer can only hook this executable once it runs).
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil && err != io.EOF {
		return err
	}
	for i := 0; i < warmup; i++ {
		if err := once(); err != nil {
			return err
		}
	}
	latencies := make([]time.Duration, 0, n)
	start := time.Now()
	for i := 0; i < n; i++ {
		t := time.Now()
		if err := once(); err != nil {
			return err
		}
		latencies = append(latencies, time.Since(t))
	}
	seconds := time.Since(start).Seconds()
	transport.CloseIdleConnections()
	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	percentile := func(p float64) float64 {
		i := int(math.Ceil(p/100*float64(len(latencies)))) - 1
		if i < 0 {
			i = 0
		}
		if i > len(latencies)-1 {
			i = len(latencies) - 1
		}
		return float64(latencies[i].Nanoseconds()) / 1000
	}
	out, err := json.Marshal(map[string]interface{}{
		"requests":    n,
		"seconds":     seconds,
		"p50_us":      percentile(50),
		"p99_us":      percentile(99),
		"rps":         float64(n) / seconds,
		"connections": atomic.LoadInt64(&connections),
	})
	if err != nil {
		return err
	}
	fmt.Println(string(out))
	return nil
}
