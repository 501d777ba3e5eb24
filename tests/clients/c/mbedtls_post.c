/* An HTTPS client on a TLS library the tracer has no hook or locator for (Mbed TLS, linked
 * statically, the binary stripped): the e2e test of the encrypted-only fallback runs it.
 *
 * usage: mbedtls_post PORT SNI_HOST MODEL
 * Connects to 127.0.0.1:PORT, asks for SNI_HOST, POSTs a chat completion request for MODEL and
 * prints the response's status line and body to stdout (the same with or without the tracer). Its
 * pid and
 * the bytes it sent and received on the wire (TLS framing included, counted in its own socket
 * callbacks) go to stderr: `pid=N wire_sent=N wire_received=N`. The certificate is not verified:
 * the test's server has a fresh self-signed one, and the name asked for is not its own.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/ssl.h>

static unsigned long wire_sent, wire_received;

static int send_cb(void *ctx, const unsigned char *buf, size_t len) {
    int fd = *(int *)ctx;
    ssize_t n = write(fd, buf, len);
    if (n < 0)
        return errno == EINTR ? MBEDTLS_ERR_SSL_WANT_WRITE : MBEDTLS_ERR_NET_SEND_FAILED;
    wire_sent += (unsigned long)n;
    return (int)n;
}

static int recv_cb(void *ctx, unsigned char *buf, size_t len) {
    int fd = *(int *)ctx;
    ssize_t n = read(fd, buf, len);
    if (n < 0)
        return errno == EINTR ? MBEDTLS_ERR_SSL_WANT_READ : MBEDTLS_ERR_NET_RECV_FAILED;
    wire_received += (unsigned long)n;
    return (int)n;
}

static void fail(const char *what, int ret) {
    fprintf(stderr, "%s failed: -0x%04x\n", what, (unsigned)-ret);
    exit(1);
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s PORT SNI_HOST MODEL\n", argv[0]);
        return 2;
    }
    int port = atoi(argv[1]);
    const char *host = argv[2];
    const char *model = argv[3];

    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        perror("connect");
        return 1;
    }

    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
    mbedtls_ssl_context ssl;
    mbedtls_ssl_config conf;
    mbedtls_entropy_init(&entropy);
    mbedtls_ctr_drbg_init(&drbg);
    mbedtls_ssl_init(&ssl);
    mbedtls_ssl_config_init(&conf);
    int ret;
    if ((ret = mbedtls_ctr_drbg_seed(&drbg, mbedtls_entropy_func, &entropy, NULL, 0)) != 0)
        fail("seeding", ret);
    if ((ret = mbedtls_ssl_config_defaults(&conf, MBEDTLS_SSL_IS_CLIENT, MBEDTLS_SSL_TRANSPORT_STREAM,
                                           MBEDTLS_SSL_PRESET_DEFAULT)) != 0)
        fail("config", ret);
    mbedtls_ssl_conf_authmode(&conf, MBEDTLS_SSL_VERIFY_NONE);
    mbedtls_ssl_conf_rng(&conf, mbedtls_ctr_drbg_random, &drbg);
    if ((ret = mbedtls_ssl_setup(&ssl, &conf)) != 0)
        fail("setup", ret);
    if ((ret = mbedtls_ssl_set_hostname(&ssl, host)) != 0)
        fail("hostname", ret);
    mbedtls_ssl_set_bio(&ssl, &fd, send_cb, recv_cb, NULL);
    while ((ret = mbedtls_ssl_handshake(&ssl)) != 0)
        if (ret != MBEDTLS_ERR_SSL_WANT_READ && ret != MBEDTLS_ERR_SSL_WANT_WRITE)
            fail("handshake", ret);

    char body[512];
    snprintf(body, sizeof body,
             "{\"model\":\"%s\",\"messages\":[{\"role\":\"user\",\"content\":"
             "\"Say hello from a stripped static binary\"}]}",
             model);
    char request[1024];
    int len = snprintf(request, sizeof request,
                       "POST /v1/chat/completions HTTP/1.1\r\nHost: %s\r\n"
                       "Content-Type: application/json\r\nAuthorization: Bearer sk-test-mbedtls\r\n"
                       "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                       host, strlen(body), body);
    for (int done = 0; done < len;) {
        ret = mbedtls_ssl_write(&ssl, (const unsigned char *)request + done, (size_t)(len - done));
        if (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE)
            continue;
        if (ret < 0)
            fail("write", ret);
        done += ret;
    }

    static char response[65536];
    size_t got = 0;
    for (;;) {
        if (got == sizeof response - 1)
            break;
        ret = mbedtls_ssl_read(&ssl, (unsigned char *)response + got, sizeof response - 1 - got);
        if (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE)
            continue;
        if (ret == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY || ret == 0)
            break;
        if (ret < 0)
            fail("read", ret);
        got += (size_t)ret;
    }
    response[got] = 0;
    mbedtls_ssl_close_notify(&ssl);

    /* The status line and the body: the headers carry a date. */
    char *eol = strstr(response, "\r\n");
    char *head_end = strstr(response, "\r\n\r\n");
    if (!eol || !head_end) {
        fprintf(stderr, "no HTTP response in %zu bytes\n", got);
        return 1;
    }
    printf("%.*s\n%s\n", (int)(eol - response), response, head_end + 4);
    fflush(stdout);
    fprintf(stderr, "pid=%d wire_sent=%lu wire_received=%lu\n", (int)getpid(), wire_sent,
            wire_received);
    close(fd);
    mbedtls_ssl_free(&ssl);
    mbedtls_ssl_config_free(&conf);
    mbedtls_ctr_drbg_free(&drbg);
    mbedtls_entropy_free(&entropy);
    return 0;
}
