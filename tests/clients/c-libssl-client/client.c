/*
 * The C twin of tests/clients/rust-openssl-client: POSTs one JSON request over HTTPS with the
 * OS's OpenSSL, linked in statically from libssl.a/libcrypto.a, then stripped by the test.
 * Prints one JSON line with exactly the bytes sent and received, hex-encoded.
 *
 * Usage: c-libssl-client PORT CA_PEM BODY  (waits for a line on stdin before connecting)
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void die(const char *what) {
    fprintf(stderr, "%s\n", what);
    ERR_print_errors_fp(stderr);
    exit(1);
}

static void hex(const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        printf("%02x", p[i]);
}

int main(int argc, char **argv) {
    if (argc != 4)
        die("usage: c-libssl-client PORT CA_PEM BODY");
    char line[64];
    if (!fgets(line, sizeof line, stdin))
        die("stdin");

    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx || SSL_CTX_load_verify_locations(ctx, argv[2], NULL) != 1)
        die("CA file");
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);

    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0)
        die("connect");
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    SSL_set_tlsext_host_name(ssl, "localhost");
    SSL_set1_host(ssl, "localhost");
    if (SSL_connect(ssl) != 1)
        die("TLS handshake");

    static char request[65536];
    const char *body = argv[3];
    int n = snprintf(request, sizeof request,
                     "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:%s\r\n"
                     "Content-Type: application/json\r\nAuthorization: Bearer sk-c-libssl-secret\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                     argv[1], strlen(body), body);
    if (n <= 0 || (size_t)n >= sizeof request)
        die("request too long");
    /* SSL_write, the classic call (the Rust client uses SSL_write_ex). */
    if (SSL_write(ssl, request, n) != n)
        die("write");

    static unsigned char response[1 << 20];
    size_t got = 0;
    for (;;) {
        int r = SSL_read(ssl, response + got, (int)(sizeof response - got));
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    printf("{\"pid\":%d,\"sent\":\"", (int)getpid());
    hex((unsigned char *)request, (size_t)n);
    printf("\",\"received\":\"");
    hex(response, got);
    printf("\"}\n");
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    close(fd);
    return 0;
}
