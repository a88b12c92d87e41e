/*
 * libsluice: the C client of Sluice. See include/sluice.h for the API and its contract.
 *
 * One nonblocking socket per client; every wait is a poll() bounded by the client's timeout.
 * Requests are encoded with protobuf-c into a write buffer; answers are read into a read buffer
 * and decoded one frame (4-byte big-endian length, then a sluice.v1.Response) at a time.
 */
#define _GNU_SOURCE
#include "sluice.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "sluice/v1/sluice.pb-c.h"

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0
#endif

/* The largest answer this client accepts: a batch of 1,000 verdicts is far below it. */
#define MAX_RESPONSE_FRAME (16u << 20)
/* A submit writes to the socket once this much is queued. */
#define SUBMIT_FLUSH_BYTES (64u << 10)
#define DEFAULT_TIMEOUT_MS 5000

enum request_kind { KIND_CHECK, KIND_PING, KIND_RELEASE, KIND_OUTCOMES, KIND_WATCH, KIND_LOAD };

typedef struct pending_request {
    uint64_t id;
    uint32_t kind;
    uint32_t count; /* checks in a check request */
} pending_request;

struct sluice_client {
    char *endpoint;
    char *token; /* presented after each connect; NULL: none */
    SSL_CTX *tls;     /* TLS settings (NULL: plain), made once at sluice_connect_with */
    SSL *ssl;         /* this connection's TLS state, NULL when plain or not connected */
    char *server_name; /* the name the daemon's certificate must carry; NULL: the endpoint's host */
    int fd;
    int timeout_ms;
    uint64_t next_id;

    uint8_t *wbuf;
    size_t wlen, wpos, wcap;
    uint8_t *rbuf;
    size_t rlen, rpos, rcap;

    pending_request *pending;
    size_t phead, pcount, pcap;

    Sluice__V1__Check *checks;
    Sluice__V1__Check **check_ptrs;
    Sluice__V1__Limit *limits;
    size_t scratch_cap;

    /* An alert stream (sluice_watch_alerts): its request id, and the batch being handed out. */
    bool streaming;
    uint64_t stream_id;
    Sluice__V1__Response *batch;
    size_t batch_pos;
};

/* MARK: errors */

static int set_error(sluice_error *error, int code, int check_index, const char *format, ...)
    __attribute__((format(printf, 4, 5)));

static int set_error(sluice_error *error, int code, int check_index, const char *format, ...) {
    if (error) {
        error->code = code;
        error->check_index = check_index;
        va_list args;
        va_start(args, format);
        vsnprintf(error->message, sizeof error->message, format, args);
        va_end(args);
    }
    return code;
}

static void clear_error(sluice_error *error) {
    if (error) {
        error->code = SLUICE_OK;
        error->check_index = -1;
        error->message[0] = '\0';
    }
}

int sluice_ratelimit_headers(const sluice_verdict *verdict, const char *policy, uint64_t window_seconds, int which, char *out,
                             size_t size) {
    if (size > 0) out[0] = '\0';
    if (!verdict) return 0;
    const char *name = policy ? policy : (verdict->rule[0] ? verdict->rule : "inline");
    /* A structured-field string: printable ASCII, '"' and '\\' escaped; anything else becomes '?'. */
    char quoted[2 * sizeof verdict->rule + 3];
    size_t q = 0;
    quoted[q++] = '"';
    for (const char *c = name; *c && q < sizeof quoted - 3; c++) {
        unsigned char u = (unsigned char)*c;
        if (u == '"' || u == '\\') quoted[q++] = '\\';
        quoted[q++] = (u >= 0x20 && u < 0x7F) ? (char)u : '?';
    }
    quoted[q++] = '"';
    quoted[q] = '\0';
    unsigned long long reset = (unsigned long long)(verdict->reset_after_ms / 1000 + (verdict->reset_after_ms % 1000 ? 1 : 0));
    size_t used = 0;
    int total = 0;
#define SLUICE_APPEND(...)                                                                                             \
    do {                                                                                                               \
        int n = snprintf(out ? out + (used < size ? used : size) : NULL, used < size ? size - used : 0, __VA_ARGS__);  \
        if (n > 0) {                                                                                                   \
            total += n;                                                                                                \
            used += (size_t)n;                                                                                         \
        }                                                                                                              \
    } while (0)
    if (which & SLUICE_HEADERS_DRAFT) {
        SLUICE_APPEND("RateLimit-Policy: %s;q=%llu", quoted, (unsigned long long)verdict->limit);
        if (window_seconds > 0) SLUICE_APPEND(";w=%llu", (unsigned long long)window_seconds);
        SLUICE_APPEND("\r\nRateLimit: %s;r=%llu;t=%llu\r\n", quoted, (unsigned long long)verdict->remaining, reset);
    }
    if (which & SLUICE_HEADERS_LEGACY) {
        SLUICE_APPEND("X-RateLimit-Limit: %llu\r\nX-RateLimit-Remaining: %llu\r\nX-RateLimit-Reset: %llu\r\n",
                      (unsigned long long)verdict->limit, (unsigned long long)verdict->remaining, reset);
    }
    if (!verdict->allowed && verdict->retry_after_ms > 0) {
        SLUICE_APPEND("Retry-After: %llu\r\n",
                      (unsigned long long)(verdict->retry_after_ms / 1000 + (verdict->retry_after_ms % 1000 ? 1 : 0)));
    }
#undef SLUICE_APPEND
    return total;
}

const char *sluice_status_name(int status) {
    switch (status) {
    case SLUICE_OK: return "ok";
    case SLUICE_INVALID_ARGUMENT: return "invalid_argument";
    case SLUICE_UNKNOWN_RULE: return "unknown_rule";
    case SLUICE_UNKNOWN_TENANT: return "unknown_tenant";
    case SLUICE_FRAME_TOO_LARGE: return "frame_too_large";
    case SLUICE_MALFORMED_MESSAGE: return "malformed_message";
    case SLUICE_OVERLOADED: return "overloaded";
    case SLUICE_INTERNAL: return "internal";
    case SLUICE_UNSUPPORTED: return "unsupported";
    case SLUICE_SHUTTING_DOWN: return "shutting_down";
    case SLUICE_FORBIDDEN: return "forbidden";
    case SLUICE_INVALID_CONFIGURATION: return "invalid_configuration";
    case SLUICE_UNAVAILABLE: return "unavailable";
    case SLUICE_UNAUTHENTICATED: return "unauthenticated";
    case SLUICE_QUOTA_EXCEEDED: return "quota_exceeded";
    case SLUICE_E_ARGUMENT: return "argument";
    case SLUICE_E_CONNECT: return "connect";
    case SLUICE_E_TIMEOUT: return "timeout";
    case SLUICE_E_IO: return "io";
    case SLUICE_E_PROTOCOL: return "protocol";
    case SLUICE_E_NOMEM: return "nomem";
    case SLUICE_E_STATE: return "state";
    default: return status > 0 ? "daemon_error" : "unknown";
    }
}

/* Closes the connection and forgets everything in flight; the next call reconnects. */
static void drop_connection(sluice_client *client) {
    if (client->ssl) SSL_free(client->ssl);
    client->ssl = NULL;
    if (client->fd >= 0) close(client->fd);
    client->fd = -1;
    client->wlen = client->wpos = 0;
    client->rlen = client->rpos = 0;
    client->phead = client->pcount = 0;
}

/* Drops the connection and reports why. */
static int fail(sluice_client *client, sluice_error *error, int code, const char *format, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(sluice_client *client, sluice_error *error, int code, const char *format, ...) {
    drop_connection(client);
    if (error) {
        error->code = code;
        error->check_index = -1;
        va_list args;
        va_start(args, format);
        vsnprintf(error->message, sizeof error->message, format, args);
        va_end(args);
    }
    return code;
}

/* MARK: connecting */

static int wait_for(int fd, short events, int timeout_ms) {
    struct pollfd p = {.fd = fd, .events = events};
    for (;;) {
        int n = poll(&p, 1, timeout_ms);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return n; /* 0: timed out */
        return p.revents;
    }
}

static int set_nonblocking(int fd) {
    int flags = fcntl(fd, F_GETFL, 0);
    return flags < 0 ? -1 : fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

/* Connects `fd` (already nonblocking) to `address` within `timeout_ms`; 0 or an errno. */
static int connect_within(int fd, const struct sockaddr *address, socklen_t length, int timeout_ms) {
    if (connect(fd, address, length) == 0) return 0;
    if (errno != EINPROGRESS && errno != EAGAIN && errno != EINTR) return errno;
    int events = wait_for(fd, POLLOUT, timeout_ms);
    if (events == 0) return ETIMEDOUT;
    if (events < 0) return errno;
    int problem = 0;
    socklen_t size = sizeof problem;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &problem, &size) != 0) return errno;
    return problem;
}

/* OpenSSL's reason for the last failure, and the certificate's when verification failed. */
static int tls_failure(sluice_client *client, sluice_error *error, const char *what) {
    char reason[160] = "";
    unsigned long code = ERR_get_error();
    if (code) ERR_error_string_n(code, reason, sizeof reason);
    ERR_clear_error();
    long verified = client->ssl ? SSL_get_verify_result(client->ssl) : X509_V_OK;
    const char *certificate = verified != X509_V_OK ? X509_verify_cert_error_string(verified) : NULL;
    drop_connection(client);
    return set_error(error, SLUICE_E_CONNECT, -1, "%s %s: %s%s%s", what, client->endpoint, reason[0] ? reason : "the connection closed",
                     certificate ? "; certificate: " : "", certificate ? certificate : "");
}

/* The TLS handshake on the connected socket, within the timeout; the daemon's certificate is
 * verified against the authority and `name`. */
static int handshake(sluice_client *client, const char *name, sluice_error *error) {
    ERR_clear_error();
    client->ssl = SSL_new(client->tls);
    if (!client->ssl || SSL_set_fd(client->ssl, client->fd) != 1) return tls_failure(client, error, "cannot start TLS to");
    SSL_set_mode(client->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* SNI for a name, and the name (or address) the certificate must carry. */
    struct in6_addr unused6;
    struct in_addr unused4;
    bool address = inet_pton(AF_INET, name, &unused4) == 1 || inet_pton(AF_INET6, name, &unused6) == 1;
    if (!address) SSL_set_tlsext_host_name(client->ssl, name);
    X509_VERIFY_PARAM *parameters = SSL_get0_param(client->ssl);
    if ((address ? X509_VERIFY_PARAM_set1_ip_asc(parameters, name) : X509_VERIFY_PARAM_set1_host(parameters, name, 0)) != 1)
        return tls_failure(client, error, "cannot verify the name of");
    for (;;) {
        int result = SSL_connect(client->ssl);
        if (result == 1) return SLUICE_OK;
        int reason = SSL_get_error(client->ssl, result);
        short wanted = reason == SSL_ERROR_WANT_READ ? POLLIN : reason == SSL_ERROR_WANT_WRITE ? POLLOUT : 0;
        if (!wanted) return tls_failure(client, error, "TLS handshake failed with");
        int events = wait_for(client->fd, wanted, client->timeout_ms);
        if (events == 0) {
            drop_connection(client);
            return set_error(error, SLUICE_E_TIMEOUT, -1, "the TLS handshake with %s took more than %d ms", client->endpoint,
                             client->timeout_ms);
        }
        if (events < 0) return tls_failure(client, error, "poll failed during the TLS handshake with");
    }
}

static int open_socket(sluice_client *client, sluice_error *error) {
    const char *endpoint = client->endpoint;
    int timeout = client->timeout_ms;
    bool is_unix = strncmp(endpoint, "unix:", 5) == 0 || strchr(endpoint, '/') != NULL;
    if (is_unix) {
        const char *path = strncmp(endpoint, "unix:", 5) == 0 ? endpoint + 5 : endpoint;
        struct sockaddr_un address = {.sun_family = AF_UNIX};
        if (path[0] == '\0' || strlen(path) >= sizeof address.sun_path)
            return set_error(error, SLUICE_E_ARGUMENT, -1, "the socket path \"%s\" is empty or longer than %zu bytes",
                             path, sizeof address.sun_path - 1);
        memcpy(address.sun_path, path, strlen(path) + 1);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || set_nonblocking(fd) != 0) {
            if (fd >= 0) close(fd);
            return set_error(error, SLUICE_E_CONNECT, -1, "cannot create a socket: %s", strerror(errno));
        }
        int problem = connect_within(fd, (struct sockaddr *)&address, sizeof address, timeout);
        if (problem != 0) {
            close(fd);
            return set_error(error, problem == ETIMEDOUT ? SLUICE_E_TIMEOUT : SLUICE_E_CONNECT, -1,
                             "cannot connect to unix:%s: %s", path, strerror(problem));
        }
        client->fd = fd;
        return SLUICE_OK;
    }

    /* HOST:PORT or [IPv6]:PORT */
    char host[256];
    const char *colon = strrchr(endpoint, ':');
    if (!colon || colon == endpoint || colon[1] == '\0')
        return set_error(error, SLUICE_E_ARGUMENT, -1,
                         "endpoint \"%s\" is neither unix:PATH, a path, HOST:PORT nor [IPv6]:PORT", endpoint);
    size_t host_length = (size_t)(colon - endpoint);
    const char *host_start = endpoint;
    if (endpoint[0] == '[' && host_length >= 2 && endpoint[host_length - 1] == ']') {
        host_start++;
        host_length -= 2;
    }
    if (host_length == 0 || host_length >= sizeof host)
        return set_error(error, SLUICE_E_ARGUMENT, -1, "endpoint \"%s\" has an empty or too long host", endpoint);
    memcpy(host, host_start, host_length);
    host[host_length] = '\0';
    const char *port = colon + 1;
    char *end = NULL;
    long port_number = strtol(port, &end, 10);
    if (*end != '\0' || port_number < 1 || port_number > 65535)
        return set_error(error, SLUICE_E_ARGUMENT, -1, "endpoint \"%s\" has no valid port (1-65535)", endpoint);

    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *addresses = NULL;
    int lookup = getaddrinfo(host, port, &hints, &addresses);
    if (lookup != 0)
        return set_error(error, SLUICE_E_CONNECT, -1, "cannot resolve \"%s\": %s", host, gai_strerror(lookup));
    int problem = ENOENT;
    for (struct addrinfo *a = addresses; a; a = a->ai_next) {
        int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) { problem = errno; continue; }
        if (set_nonblocking(fd) != 0) { problem = errno; close(fd); continue; }
        problem = connect_within(fd, a->ai_addr, a->ai_addrlen, timeout);
        if (problem == 0) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            client->fd = fd;
            break;
        }
        close(fd);
    }
    freeaddrinfo(addresses);
    if (client->fd < 0)
        return set_error(error, problem == ETIMEDOUT ? SLUICE_E_TIMEOUT : SLUICE_E_CONNECT, -1,
                         "cannot connect to %s: %s", endpoint, strerror(problem));
    return client->tls ? handshake(client, client->server_name ? client->server_name : host, error) : SLUICE_OK;
}

static int queue_request(sluice_client *client, Sluice__V1__Request *request, uint32_t kind, uint32_t count,
                         sluice_error *error);
static int next_response(sluice_client *client, Sluice__V1__Response **response, pending_request *request,
                         sluice_error *error);

/* Connects, then presents the token (if any): its refusal closes the connection again. */
static int open_connection(sluice_client *client, sluice_error *error) {
    int status = open_socket(client, error);
    if (status != SLUICE_OK || !client->token) return status;
    Sluice__V1__AuthenticateRequest body = SLUICE__V1__AUTHENTICATE_REQUEST__INIT;
    body.token = client->token;
    Sluice__V1__Request request = SLUICE__V1__REQUEST__INIT;
    request.id = client->next_id++;
    request.body_case = SLUICE__V1__REQUEST__BODY_AUTHENTICATE;
    request.authenticate = &body;
    if ((status = queue_request(client, &request, KIND_PING, 0, error)) != SLUICE_OK) return status;
    Sluice__V1__Response *response = NULL;
    pending_request pending;
    status = next_response(client, &response, &pending, error);
    if (status != SLUICE_OK) {
        drop_connection(client);
        return status;
    }
    bool ok = response->body_case == SLUICE__V1__RESPONSE__BODY_AUTHENTICATE;
    sluice__v1__response__free_unpacked(response, NULL);
    if (!ok) return fail(client, error, SLUICE_E_PROTOCOL, "the daemon answered Authenticate with something else");
    return SLUICE_OK;
}

static int ensure_connected(sluice_client *client, sluice_error *error) {
    if (client->fd >= 0) return SLUICE_OK;
    return open_connection(client, error);
}

sluice_client *sluice_connect(const char *endpoint, int timeout_ms, sluice_error *error) {
    return sluice_connect_token(endpoint, NULL, timeout_ms, error);
}

sluice_client *sluice_connect_token(const char *endpoint, const char *token, int timeout_ms, sluice_error *error) {
    sluice_options options = {.timeout_ms = timeout_ms, .token = token};
    return sluice_connect_with(endpoint, &options, error);
}

/* The TLS settings `options` ask for; NULL with `error` filled when a file cannot be used. */
static SSL_CTX *tls_context(const sluice_options *options, sluice_error *error) {
    ERR_clear_error();
    SSL_CTX *context = SSL_CTX_new(TLS_client_method());
    char reason[160] = "";
    const char *what = "cannot set up TLS";
    if (!context) goto failed;
    SSL_CTX_set_min_proto_version(context, TLS1_2_VERSION);
    SSL_CTX_set_verify(context, SSL_VERIFY_PEER, NULL);
    what = "cannot read the TLS authority";
    if (options->tls_ca ? SSL_CTX_load_verify_locations(context, options->tls_ca, NULL) != 1
                        : SSL_CTX_set_default_verify_paths(context) != 1) goto failed;
    if (options->tls_cert) {
        what = "cannot read the TLS client certificate or key";
        if (SSL_CTX_use_certificate_chain_file(context, options->tls_cert) != 1 ||
            SSL_CTX_use_PrivateKey_file(context, options->tls_key ? options->tls_key : options->tls_cert, SSL_FILETYPE_PEM) != 1 ||
            SSL_CTX_check_private_key(context) != 1) goto failed;
    }
    return context;
failed:
    if (ERR_peek_last_error()) ERR_error_string_n(ERR_get_error(), reason, sizeof reason);
    ERR_clear_error();
    if (context) SSL_CTX_free(context);
    set_error(error, SLUICE_E_ARGUMENT, -1, "%s: %s", what, reason[0] ? reason : "OpenSSL failed");
    return NULL;
}

sluice_client *sluice_connect_with(const char *endpoint, const sluice_options *given, sluice_error *error) {
    sluice_options none = {0};
    const sluice_options *options = given ? given : &none;
    int timeout_ms = options->timeout_ms;
    const char *token = options->token;
    clear_error(error);
    if (!endpoint || endpoint[0] == '\0') {
        set_error(error, SLUICE_E_ARGUMENT, -1, "no endpoint given");
        return NULL;
    }
    sluice_client *client = calloc(1, sizeof *client);
    if (!client || !(client->endpoint = strdup(endpoint))) {
        free(client);
        set_error(error, SLUICE_E_NOMEM, -1, "out of memory");
        return NULL;
    }
    client->fd = -1;
    if (options->tls || options->tls_ca || options->tls_cert) {
        bool is_unix = strncmp(endpoint, "unix:", 5) == 0 || strchr(endpoint, '/') != NULL;
        if (is_unix) {
            sluice_close(client);
            set_error(error, SLUICE_E_ARGUMENT, -1, "TLS is for TCP endpoints, not %s", endpoint);
            return NULL;
        }
        if (!(client->tls = tls_context(options, error))) {
            sluice_close(client);
            return NULL;
        }
        if (options->server_name && !(client->server_name = strdup(options->server_name))) {
            sluice_close(client);
            set_error(error, SLUICE_E_NOMEM, -1, "out of memory");
            return NULL;
        }
    }
    if (token && token[0] != '\0' && !(client->token = strdup(token))) {
        sluice_close(client);
        set_error(error, SLUICE_E_NOMEM, -1, "out of memory");
        return NULL;
    }
    client->timeout_ms = timeout_ms > 0 ? timeout_ms : DEFAULT_TIMEOUT_MS;
    client->next_id = 1;
    if (open_connection(client, error) != SLUICE_OK) {
        sluice_close(client);
        return NULL;
    }
    return client;
}

void sluice_close(sluice_client *client) {
    if (!client) return;
    drop_connection(client);
    if (client->tls) SSL_CTX_free(client->tls);
    free(client->server_name);
    free(client->endpoint);
    free(client->token);
    free(client->wbuf);
    free(client->rbuf);
    free(client->pending);
    free(client->checks);
    free(client->check_ptrs);
    free(client->limits);
    if (client->batch) sluice__v1__response__free_unpacked(client->batch, NULL);
    free(client);
}

void sluice_set_timeout(sluice_client *client, int timeout_ms) {
    if (client) client->timeout_ms = timeout_ms > 0 ? timeout_ms : DEFAULT_TIMEOUT_MS;
}

bool sluice_connected(const sluice_client *client) { return client && client->fd >= 0; }

size_t sluice_pending(const sluice_client *client) { return client ? client->pcount : 0; }

/* MARK: buffers */

static bool reserve(uint8_t **buffer, size_t *capacity, size_t needed) {
    if (needed <= *capacity) return true;
    size_t grown = *capacity ? *capacity : 4096;
    while (grown < needed) grown *= 2;
    uint8_t *bigger = realloc(*buffer, grown);
    if (!bigger) return false;
    *buffer = bigger;
    *capacity = grown;
    return true;
}

static bool push_pending(sluice_client *client, pending_request request) {
    if (client->pcount == client->pcap) {
        size_t grown = client->pcap ? client->pcap * 2 : 64;
        pending_request *bigger = malloc(grown * sizeof *bigger);
        if (!bigger) return false;
        for (size_t i = 0; i < client->pcount; i++)
            bigger[i] = client->pending[(client->phead + i) % client->pcap];
        free(client->pending);
        client->pending = bigger;
        client->pcap = grown;
        client->phead = 0;
    }
    client->pending[(client->phead + client->pcount) % client->pcap] = request;
    client->pcount++;
    return true;
}

/* Reads whatever the socket has into the read buffer. 1: read some; 0: nothing now; <0: failed. */
static int read_available(sluice_client *client, sluice_error *error) {
    if (client->rpos > 0 && client->rpos == client->rlen) client->rpos = client->rlen = 0;
    if (client->rcap - client->rlen < 4096) {
        if (client->rpos > 0) {
            memmove(client->rbuf, client->rbuf + client->rpos, client->rlen - client->rpos);
            client->rlen -= client->rpos;
            client->rpos = 0;
        }
        if (!reserve(&client->rbuf, &client->rcap, client->rlen + 65536))
            return fail(client, error, SLUICE_E_NOMEM, "out of memory for the read buffer");
    }
    if (client->ssl) {
        ERR_clear_error();
        int n = SSL_read(client->ssl, client->rbuf + client->rlen, (int)(client->rcap - client->rlen > INT32_MAX ? INT32_MAX : client->rcap - client->rlen));
        if (n > 0) {
            client->rlen += (size_t)n;
            return 1;
        }
        int reason = SSL_get_error(client->ssl, n);
        if (reason == SSL_ERROR_WANT_READ || reason == SSL_ERROR_WANT_WRITE) return 0;
        if (reason == SSL_ERROR_ZERO_RETURN) return fail(client, error, SLUICE_E_IO, "the daemon closed the connection");
        return fail(client, error, SLUICE_E_IO, "reading from the daemon failed (TLS: %s)",
                    reason == SSL_ERROR_SYSCALL && errno ? strerror(errno) : ERR_reason_error_string(ERR_peek_last_error()) ? ERR_reason_error_string(ERR_peek_last_error()) : "closed");
    }
    for (;;) {
        ssize_t n = recv(client->fd, client->rbuf + client->rlen, client->rcap - client->rlen, 0);
        if (n > 0) {
            client->rlen += (size_t)n;
            return 1;
        }
        if (n == 0) return fail(client, error, SLUICE_E_IO, "the daemon closed the connection");
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
        return fail(client, error, SLUICE_E_IO, "reading from the daemon failed: %s", strerror(errno));
    }
}

/* Sends everything queued; while the socket is full it also reads, so neither side can stall. */
static int flush_out(sluice_client *client, sluice_error *error) {
    while (client->wpos < client->wlen) {
        size_t left = client->wlen - client->wpos;
        if (client->ssl) {
            ERR_clear_error();
            int n = SSL_write(client->ssl, client->wbuf + client->wpos, (int)(left > INT32_MAX ? INT32_MAX : left));
            if (n > 0) {
                client->wpos += (size_t)n;
                continue;
            }
            int reason = SSL_get_error(client->ssl, n);
            if (reason != SSL_ERROR_WANT_READ && reason != SSL_ERROR_WANT_WRITE)
                return fail(client, error, SLUICE_E_IO, "writing to the daemon failed (TLS: %s)",
                            reason == SSL_ERROR_SYSCALL && errno ? strerror(errno) : "the connection broke");
        } else {
            ssize_t n = send(client->fd, client->wbuf + client->wpos, left, MSG_NOSIGNAL);
            if (n > 0) {
                client->wpos += (size_t)n;
                continue;
            }
            if (n < 0 && errno == EINTR) continue;
            if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
                return fail(client, error, SLUICE_E_IO, "writing to the daemon failed: %s", strerror(errno));
        }
        int events = wait_for(client->fd, POLLOUT | POLLIN, client->timeout_ms);
        if (events == 0)
            return fail(client, error, SLUICE_E_TIMEOUT, "the daemon took no data for %d ms", client->timeout_ms);
        if (events < 0) return fail(client, error, SLUICE_E_IO, "poll failed: %s", strerror(errno));
        if (events & POLLIN) {
            int status = read_available(client, error);
            if (status < 0) return status;
        } else if (events & (POLLERR | POLLHUP | POLLNVAL)) {
            return fail(client, error, SLUICE_E_IO, "the connection to the daemon broke");
        }
    }
    client->wpos = client->wlen = 0;
    return SLUICE_OK;
}

/* Waits for one whole frame; points payload and length at it inside the read buffer. */
static int read_frame(sluice_client *client, const uint8_t **payload, size_t *length, sluice_error *error) {
    for (;;) {
        size_t have = client->rlen - client->rpos;
        if (have >= 4) {
            const uint8_t *p = client->rbuf + client->rpos;
            uint32_t n = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
            if (n > MAX_RESPONSE_FRAME)
                return fail(client, error, SLUICE_E_PROTOCOL, "the daemon sent a frame of %u bytes, more than %u",
                            n, MAX_RESPONSE_FRAME);
            if (have >= 4 + (size_t)n) {
                *payload = p + 4;
                *length = n;
                client->rpos += 4 + (size_t)n;
                return SLUICE_OK;
            }
            if (!reserve(&client->rbuf, &client->rcap, client->rpos + 4 + (size_t)n))
                return fail(client, error, SLUICE_E_NOMEM, "out of memory for a %u-byte frame", n);
        }
        int status = read_available(client, error);
        if (status < 0) return status;
        if (status == 0) {
            int events = wait_for(client->fd, POLLIN, client->timeout_ms);
            if (events == 0)
                return fail(client, error, SLUICE_E_TIMEOUT, "no answer from the daemon within %d ms", client->timeout_ms);
            if (events < 0) return fail(client, error, SLUICE_E_IO, "poll failed: %s", strerror(errno));
        }
    }
}

/* MARK: encoding */

static char *text(const char *s) { return s ? (char *)s : (char *)protobuf_c_empty_string; }

static bool reserve_scratch(sluice_client *client, size_t count) {
    if (count <= client->scratch_cap) return true;
    Sluice__V1__Check *checks = realloc(client->checks, count * sizeof *checks);
    if (checks) client->checks = checks;
    Sluice__V1__Check **pointers = realloc(client->check_ptrs, count * sizeof *pointers);
    if (pointers) client->check_ptrs = pointers;
    Sluice__V1__Limit *limits = realloc(client->limits, count * sizeof *limits);
    if (limits) client->limits = limits;
    if (!checks || !pointers || !limits) return false;
    client->scratch_cap = count;
    return true;
}

static void fill_limit_source(const sluice_check *in, Sluice__V1__Limit *limit, int *source_case, char **rule,
                              Sluice__V1__Limit **limit_field, int rule_case, int limit_case) {
    if (in->rule && in->rule[0]) {
        *source_case = rule_case;
        *rule = (char *)in->rule;
    } else {
        sluice__v1__limit__init(limit);
        limit->limit = in->limit;
        limit->period_ms = in->period_ms;
        limit->burst = in->burst;
        limit->algorithm = (Sluice__V1__Algorithm)in->algorithm;
        *source_case = limit_case;
        *limit_field = limit;
    }
}

static void fill_check(const sluice_check *in, Sluice__V1__Check *out, Sluice__V1__Limit *limit) {
    sluice__v1__check__init(out);
    out->tenant = text(in->tenant);
    out->key = text(in->key);
    out->subject = text(in->subject);
    out->now_ms = in->now_ms;
    out->ip = text(in->ip);
    out->route = text(in->route);
    if (in->peek) {
        out->hits_presence_case = SLUICE__V1__CHECK__HITS_PRESENCE_HITS;
        out->hits = 0;
    } else if (in->hits > 1) {
        out->hits_presence_case = SLUICE__V1__CHECK__HITS_PRESENCE_HITS;
        out->hits = in->hits;
    } /* otherwise hits stays unset, which means one hit */
    int source = 0;
    fill_limit_source(in, limit, &source, &out->rule, &out->limit, SLUICE__V1__CHECK__LIMIT_SOURCE_RULE,
                      SLUICE__V1__CHECK__LIMIT_SOURCE_LIMIT);
    out->limit_source_case = (Sluice__V1__Check__LimitSourceCase)source;
}

/* Frames `request` onto the write buffer and records it as pending. */
static int queue_request(sluice_client *client, Sluice__V1__Request *request, uint32_t kind, uint32_t count,
                         sluice_error *error) {
    size_t size = sluice__v1__request__get_packed_size(request);
    if (size > UINT32_MAX)
        return set_error(error, SLUICE_E_ARGUMENT, -1, "the request encodes to %zu bytes, too large for a frame", size);
    if (client->wpos == client->wlen) client->wpos = client->wlen = 0;
    if (!reserve(&client->wbuf, &client->wcap, client->wlen + 4 + size))
        return set_error(error, SLUICE_E_NOMEM, -1, "out of memory for a %zu-byte request", size);
    uint8_t *p = client->wbuf + client->wlen;
    p[0] = (uint8_t)(size >> 24);
    p[1] = (uint8_t)(size >> 16);
    p[2] = (uint8_t)(size >> 8);
    p[3] = (uint8_t)size;
    sluice__v1__request__pack(request, p + 4);
    if (!push_pending(client, (pending_request){.id = request->id, .kind = kind, .count = count}))
        return set_error(error, SLUICE_E_NOMEM, -1, "out of memory for the pending list");
    client->wlen += 4 + size;
    return SLUICE_OK;
}

static int queue_checks(sluice_client *client, const sluice_check *checks, size_t count, uint64_t *request_id,
                        sluice_error *error) {
    if (!checks || count == 0 || count > SLUICE_MAX_BATCH)
        return set_error(error, SLUICE_E_ARGUMENT, -1, "a batch holds 1 to %d checks, got %zu", SLUICE_MAX_BATCH,
                         checks ? count : 0);
    if (!reserve_scratch(client, count)) return set_error(error, SLUICE_E_NOMEM, -1, "out of memory");
    for (size_t i = 0; i < count; i++) {
        fill_check(&checks[i], &client->checks[i], &client->limits[i]);
        client->check_ptrs[i] = &client->checks[i];
    }
    Sluice__V1__CheckRequest body = SLUICE__V1__CHECK_REQUEST__INIT;
    body.n_checks = count;
    body.checks = client->check_ptrs;
    Sluice__V1__Request request = SLUICE__V1__REQUEST__INIT;
    request.id = client->next_id++;
    request.body_case = SLUICE__V1__REQUEST__BODY_CHECK;
    request.check = &body;
    int status = queue_request(client, &request, KIND_CHECK, (uint32_t)count, error);
    if (status == SLUICE_OK && request_id) *request_id = request.id;
    return status;
}

/* MARK: answers */

static void copy_verdict(const Sluice__V1__Verdict *in, sluice_verdict *out) {
    out->allowed = in->allowed;
    out->limit = in->limit;
    out->remaining = in->remaining;
    out->reset_after_ms = in->reset_after_ms;
    out->retry_after_ms = in->retry_after_ms;
    out->lease_id = in->lease_id;
    out->limit_index = in->limit_index;
    out->algorithm = (sluice_algorithm)in->algorithm;
    out->reason = (sluice_reason)in->reason;
    snprintf(out->rule, sizeof out->rule, "%s", in->rule ? in->rule : "");
    out->has_reputation = in->reputation_presence_case == SLUICE__V1__VERDICT__REPUTATION_PRESENCE_REPUTATION;
    out->reputation = out->has_reputation ? in->reputation : 0;
    out->multiplier = in->multiplier > 0 ? in->multiplier : 1.0;
    out->would_deny = in->would_deny;
    out->would_deny_reason = in->would_deny ? (sluice_reason)in->would_deny_reason : SLUICE_REASON_UNSPECIFIED;
    snprintf(out->tier, sizeof out->tier, "%s", in->tier ? in->tier : "");
    snprintf(out->anomaly, sizeof out->anomaly, "%s", in->anomaly ? in->anomaly : "");
}

/*
 * Reads the answer to the oldest pending request. On SLUICE_OK *response holds it (free it with
 * sluice__v1__response__free_unpacked) and *request its bookkeeping; a daemon error is returned as
 * its code with the response already freed.
 */
static int next_response(sluice_client *client, Sluice__V1__Response **response, pending_request *request,
                         sluice_error *error) {
    if (client->pcount == 0)
        return set_error(error, SLUICE_E_STATE, -1, "no request is waiting for an answer");
    int status = flush_out(client, error);
    if (status != SLUICE_OK) return status;
    const uint8_t *payload = NULL;
    size_t length = 0;
    status = read_frame(client, &payload, &length, error);
    if (status != SLUICE_OK) return status;
    Sluice__V1__Response *answer = sluice__v1__response__unpack(NULL, length, payload);
    if (!answer) return fail(client, error, SLUICE_E_PROTOCOL, "the daemon's answer is not a valid sluice.v1.Response");
    *request = client->pending[client->phead];
    client->phead = (client->phead + 1) % client->pcap;
    client->pcount--;
    if (answer->id != request->id) {
        /* An error with id 0 is the daemon refusing the connection (overloaded, shutting down). */
        if (answer->id == 0 && answer->body_case == SLUICE__V1__RESPONSE__BODY_ERROR && answer->error) {
            int code = answer->error->code > 0 ? (int)answer->error->code : SLUICE_E_PROTOCOL;
            fail(client, error, code, "the daemon refused the connection: %s",
                 answer->error->message ? answer->error->message : "");
            sluice__v1__response__free_unpacked(answer, NULL);
            return code;
        }
        unsigned long long got = (unsigned long long)answer->id, want = (unsigned long long)request->id;
        sluice__v1__response__free_unpacked(answer, NULL);
        return fail(client, error, SLUICE_E_PROTOCOL, "the answer for request %llu arrived where %llu was expected", got,
                    want);
    }
    if (answer->body_case == SLUICE__V1__RESPONSE__BODY_ERROR && answer->error) {
        int code = answer->error->code > 0 ? (int)answer->error->code : SLUICE_INTERNAL;
        /* check_index is -1 unless the error is about one check of a batch. */
        set_error(error, code, answer->error->check_index, "%s",
                  answer->error->message ? answer->error->message : "the daemon reported an error");
        sluice__v1__response__free_unpacked(answer, NULL);
        return code;
    }
    *response = answer;
    return SLUICE_OK;
}

static int collect_checks(sluice_client *client, uint64_t *request_id, sluice_verdict *verdicts, size_t capacity,
                          size_t *count, sluice_error *error) {
    if (client->pcount == 0)
        return set_error(error, SLUICE_E_STATE, -1, "no request is waiting for an answer");
    pending_request head = client->pending[client->phead];
    if (head.kind == KIND_CHECK && (!verdicts || capacity < head.count))
        return set_error(error, SLUICE_E_STATE, -1, "the next answer holds %u verdicts; room was given for %zu",
                         head.count, verdicts ? capacity : 0);
    Sluice__V1__Response *response = NULL;
    pending_request request;
    if (request_id) *request_id = head.id;
    if (count) *count = 0;
    int status = next_response(client, &response, &request, error);
    if (status != SLUICE_OK) return status;
    if (request.kind != KIND_CHECK || response->body_case != SLUICE__V1__RESPONSE__BODY_CHECK || !response->check ||
        response->check->n_verdicts != request.count) {
        sluice__v1__response__free_unpacked(response, NULL);
        return fail(client, error, SLUICE_E_PROTOCOL, "the daemon's answer to request %llu is not the %u verdicts asked for",
                    (unsigned long long)request.id, request.count);
    }
    for (size_t i = 0; i < response->check->n_verdicts; i++) copy_verdict(response->check->verdicts[i], &verdicts[i]);
    if (count) *count = response->check->n_verdicts;
    sluice__v1__response__free_unpacked(response, NULL);
    return SLUICE_OK;
}

/* MARK: the calls */

static int begin_call(sluice_client *client, sluice_error *error, bool synchronous) {
    clear_error(error);
    if (!client) return set_error(error, SLUICE_E_ARGUMENT, -1, "no client given");
    if (client->streaming)
        return set_error(error, SLUICE_E_STATE, -1, "this client follows alerts; make other calls on a client of their own");
    if (synchronous && client->pcount > 0)
        return set_error(error, SLUICE_E_STATE, -1, "%zu pipelined answers are still to be collected", client->pcount);
    return ensure_connected(client, error);
}

int sluice_ping(sluice_client *client, sluice_error *error) {
    int status = begin_call(client, error, true);
    if (status != SLUICE_OK) return status;
    Sluice__V1__PingRequest ping = SLUICE__V1__PING_REQUEST__INIT;
    Sluice__V1__Request request = SLUICE__V1__REQUEST__INIT;
    request.id = client->next_id++;
    request.body_case = SLUICE__V1__REQUEST__BODY_PING;
    request.ping = &ping;
    if ((status = queue_request(client, &request, KIND_PING, 0, error)) != SLUICE_OK) return status;
    Sluice__V1__Response *response = NULL;
    pending_request pending;
    if ((status = next_response(client, &response, &pending, error)) != SLUICE_OK) return status;
    bool ok = response->body_case == SLUICE__V1__RESPONSE__BODY_PING;
    sluice__v1__response__free_unpacked(response, NULL);
    return ok ? SLUICE_OK : fail(client, error, SLUICE_E_PROTOCOL, "the daemon answered a ping with something else");
}

int sluice_check_batch(sluice_client *client, const sluice_check *checks, size_t count, sluice_verdict *verdicts,
                       sluice_error *error) {
    int status = begin_call(client, error, true);
    if (status != SLUICE_OK) return status;
    if (!verdicts) return set_error(error, SLUICE_E_ARGUMENT, -1, "no room given for the verdicts");
    if ((status = queue_checks(client, checks, count, NULL, error)) != SLUICE_OK) return status;
    return collect_checks(client, NULL, verdicts, count, NULL, error);
}

int sluice_check_one(sluice_client *client, const sluice_check *check, sluice_verdict *verdict, sluice_error *error) {
    return sluice_check_batch(client, check, 1, verdict, error);
}

int sluice_release(sluice_client *client, const sluice_check *check, uint64_t lease_id, bool *released,
                   sluice_error *error) {
    int status = begin_call(client, error, true);
    if (status != SLUICE_OK) return status;
    if (!check) return set_error(error, SLUICE_E_ARGUMENT, -1, "no check given to name the lease's key and limit");
    Sluice__V1__ReleaseRequest body = SLUICE__V1__RELEASE_REQUEST__INIT;
    Sluice__V1__Limit limit;
    body.tenant = text(check->tenant);
    body.key = text(check->key);
    body.lease_id = lease_id;
    body.now_ms = check->now_ms;
    int source = 0;
    fill_limit_source(check, &limit, &source, &body.rule, &body.limit, SLUICE__V1__RELEASE_REQUEST__LIMIT_SOURCE_RULE,
                      SLUICE__V1__RELEASE_REQUEST__LIMIT_SOURCE_LIMIT);
    body.limit_source_case = (Sluice__V1__ReleaseRequest__LimitSourceCase)source;
    Sluice__V1__Request request = SLUICE__V1__REQUEST__INIT;
    request.id = client->next_id++;
    request.body_case = SLUICE__V1__REQUEST__BODY_RELEASE;
    request.release = &body;
    if ((status = queue_request(client, &request, KIND_RELEASE, 0, error)) != SLUICE_OK) return status;
    Sluice__V1__Response *response = NULL;
    pending_request pending;
    if ((status = next_response(client, &response, &pending, error)) != SLUICE_OK) return status;
    bool ok = response->body_case == SLUICE__V1__RESPONSE__BODY_RELEASE && response->release;
    if (ok && released) *released = response->release->released;
    sluice__v1__response__free_unpacked(response, NULL);
    return ok ? SLUICE_OK : fail(client, error, SLUICE_E_PROTOCOL, "the daemon answered a release with something else");
}

int sluice_submit(sluice_client *client, const sluice_check *checks, size_t count, uint64_t *request_id,
                  sluice_error *error) {
    int status = begin_call(client, error, false);
    if (status != SLUICE_OK) return status;
    if ((status = queue_checks(client, checks, count, request_id, error)) != SLUICE_OK) return status;
    if (client->wlen - client->wpos >= SUBMIT_FLUSH_BYTES) return flush_out(client, error);
    return SLUICE_OK;
}

int sluice_flush(sluice_client *client, sluice_error *error) {
    clear_error(error);
    if (!client) return set_error(error, SLUICE_E_ARGUMENT, -1, "no client given");
    if (client->fd < 0) return client->wlen > client->wpos ? set_error(error, SLUICE_E_IO, -1, "not connected") : SLUICE_OK;
    return flush_out(client, error);
}

int sluice_collect(sluice_client *client, uint64_t *request_id, sluice_verdict *verdicts, size_t capacity,
                   size_t *count, sluice_error *error) {
    clear_error(error);
    if (!client) return set_error(error, SLUICE_E_ARGUMENT, -1, "no client given");
    if (client->fd < 0 || client->pcount == 0)
        return set_error(error, SLUICE_E_STATE, -1, "no request is waiting for an answer");
    return collect_checks(client, request_id, verdicts, capacity, count, error);
}

/* MARK: anomaly detection */

int sluice_report_outcomes(sluice_client *client, const sluice_outcome *outcomes, size_t count, uint32_t *recorded,
                           sluice_error *error) {
    int status = begin_call(client, error, true);
    if (status != SLUICE_OK) return status;
    if (!outcomes || count == 0 || count > SLUICE_MAX_BATCH)
        return set_error(error, SLUICE_E_ARGUMENT, -1, "a report holds 1 to %d outcomes, got %zu", SLUICE_MAX_BATCH,
                         outcomes ? count : 0);
    Sluice__V1__Outcome *items = calloc(count, sizeof *items);
    Sluice__V1__Outcome **pointers = calloc(count, sizeof *pointers);
    if (!items || !pointers) {
        free(items);
        free(pointers);
        return set_error(error, SLUICE_E_NOMEM, -1, "out of memory");
    }
    for (size_t i = 0; i < count; i++) {
        sluice__v1__outcome__init(&items[i]);
        items[i].tenant = text(outcomes[i].tenant);
        items[i].subject = text(outcomes[i].subject);
        items[i].ip = text(outcomes[i].ip);
        items[i].route = text(outcomes[i].route);
        items[i].status = outcomes[i].status;
        items[i].time_ms = outcomes[i].time_ms;
        pointers[i] = &items[i];
    }
    Sluice__V1__ReportOutcomeRequest body = SLUICE__V1__REPORT_OUTCOME_REQUEST__INIT;
    body.n_outcomes = count;
    body.outcomes = pointers;
    Sluice__V1__Request request = SLUICE__V1__REQUEST__INIT;
    request.id = client->next_id++;
    request.body_case = SLUICE__V1__REQUEST__BODY_REPORT_OUTCOME;
    request.report_outcome = &body;
    status = queue_request(client, &request, KIND_OUTCOMES, (uint32_t)count, error);
    free(items);
    free(pointers);
    if (status != SLUICE_OK) return status;
    Sluice__V1__Response *response = NULL;
    pending_request pending;
    if ((status = next_response(client, &response, &pending, error)) != SLUICE_OK) return status;
    bool ok = response->body_case == SLUICE__V1__RESPONSE__BODY_REPORT_OUTCOME && response->report_outcome;
    if (ok && recorded) *recorded = response->report_outcome->recorded;
    sluice__v1__response__free_unpacked(response, NULL);
    return ok ? SLUICE_OK : fail(client, error, SLUICE_E_PROTOCOL, "the daemon answered a report with something else");
}

int sluice_report_load(sluice_client *client, const sluice_load_report *report, sluice_load *load,
                       sluice_tier_load *tiers, size_t capacity, sluice_error *error) {
    int status = begin_call(client, error, true);
    if (status != SLUICE_OK) return status;
    if (!report || !report->service || !report->service[0])
        return set_error(error, SLUICE_E_ARGUMENT, -1, "a load report names its service");
    if (!(report->error_rate >= 0.0 && report->error_rate <= 1.0))
        return set_error(error, SLUICE_E_ARGUMENT, -1, "error_rate is a share, 0 to 1, got %g", report->error_rate);
    if (!tiers && capacity > 0) return set_error(error, SLUICE_E_ARGUMENT, -1, "no room given for the tiers");
    Sluice__V1__ReportLoadRequest body = SLUICE__V1__REPORT_LOAD_REQUEST__INIT;
    body.service = (char *)report->service;
    body.in_flight = report->in_flight;
    body.latency_p50_us = report->latency_p50_us;
    body.latency_p99_us = report->latency_p99_us;
    body.error_rate = report->error_rate;
    Sluice__V1__Request request = SLUICE__V1__REQUEST__INIT;
    request.id = client->next_id++;
    request.body_case = SLUICE__V1__REQUEST__BODY_REPORT_LOAD;
    request.report_load = &body;
    if ((status = queue_request(client, &request, KIND_LOAD, 0, error)) != SLUICE_OK) return status;
    Sluice__V1__Response *response = NULL;
    pending_request pending;
    if ((status = next_response(client, &response, &pending, error)) != SLUICE_OK) return status;
    const Sluice__V1__ReportLoadResponse *answer = response->report_load;
    if (response->body_case != SLUICE__V1__RESPONSE__BODY_REPORT_LOAD || !answer) {
        sluice__v1__response__free_unpacked(response, NULL);
        return fail(client, error, SLUICE_E_PROTOCOL, "the daemon answered a load report with something else");
    }
    if (load) {
        load->load_factor = answer->load_factor;
        load->smoothed_p99_us = answer->smoothed_p99_us;
        load->tier_count = answer->n_tiers;
    }
    for (size_t i = 0; i < answer->n_tiers && i < capacity; i++) {
        const Sluice__V1__TierLoad *tier = answer->tiers[i];
        snprintf(tiers[i].tier, sizeof tiers[i].tier, "%s", tier && tier->tier ? tier->tier : "");
        tiers[i].multiplier = tier ? tier->multiplier : 0;
        tiers[i].demand = tier ? tier->demand : 0;
    }
    sluice__v1__response__free_unpacked(response, NULL);
    return SLUICE_OK;
}

/* Whether a whole frame waits in the read buffer. */
static bool frame_buffered(const sluice_client *client) {
    size_t have = client->rlen - client->rpos;
    if (have < 4) return false;
    const uint8_t *p = client->rbuf + client->rpos;
    uint32_t n = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
    return have >= 4 + (size_t)n;
}

/* Takes `response` as the batch being handed out, if it is one of the stream's. */
static int take_batch(sluice_client *client, Sluice__V1__Response *response, sluice_error *error) {
    if (response->body_case != SLUICE__V1__RESPONSE__BODY_WATCH_ALERTS || !response->watch_alerts) {
        sluice__v1__response__free_unpacked(response, NULL);
        return fail(client, error, SLUICE_E_PROTOCOL, "the daemon sent something other than alerts on the alert stream");
    }
    if (client->batch) sluice__v1__response__free_unpacked(client->batch, NULL);
    client->batch = response;
    client->batch_pos = 0;
    return SLUICE_OK;
}

int sluice_watch_alerts(sluice_client *client, const char *const *kinds, const char *tenant, uint32_t recent,
                        sluice_error *error) {
    clear_error(error);
    if (!client) return set_error(error, SLUICE_E_ARGUMENT, -1, "no client given");
    if (client->streaming && client->fd >= 0)
        return set_error(error, SLUICE_E_STATE, -1, "this client follows alerts already");
    client->streaming = false; /* an ended stream: follow anew */
    if (client->batch) sluice__v1__response__free_unpacked(client->batch, NULL);
    client->batch = NULL;
    int status = begin_call(client, error, true);
    if (status != SLUICE_OK) return status;
    size_t n = 0;
    while (kinds && kinds[n]) n++;
    Sluice__V1__WatchAlertsRequest body = SLUICE__V1__WATCH_ALERTS_REQUEST__INIT;
    body.n_kinds = n;
    body.kinds = (char **)kinds;
    body.tenant = text(tenant);
    body.recent = recent;
    Sluice__V1__Request request = SLUICE__V1__REQUEST__INIT;
    request.id = client->next_id++;
    request.body_case = SLUICE__V1__REQUEST__BODY_WATCH_ALERTS;
    request.watch_alerts = &body;
    if ((status = queue_request(client, &request, KIND_WATCH, 0, error)) != SLUICE_OK) return status;
    Sluice__V1__Response *response = NULL;
    pending_request pending;
    if ((status = next_response(client, &response, &pending, error)) != SLUICE_OK) return status;
    if ((status = take_batch(client, response, error)) != SLUICE_OK) return status;
    client->streaming = true;
    client->stream_id = request.id;
    return SLUICE_OK;
}

static void copy_alert(const Sluice__V1__Alert *in, sluice_alert *out) {
    out->time_ms = in->time_ms;
    out->score = in->score;
    snprintf(out->scope, sizeof out->scope, "%s", in->scope ? in->scope : "");
    snprintf(out->subject, sizeof out->subject, "%s", in->subject ? in->subject : "");
    snprintf(out->ip, sizeof out->ip, "%s", in->ip ? in->ip : "");
    snprintf(out->tenant, sizeof out->tenant, "%s", in->tenant ? in->tenant : "");
    snprintf(out->kind, sizeof out->kind, "%s", in->kind ? in->kind : "");
    snprintf(out->detail, sizeof out->detail, "%s", in->detail ? in->detail : "");
}

int sluice_next_alert(sluice_client *client, sluice_alert *alert, uint64_t *dropped, sluice_error *error) {
    clear_error(error);
    if (!client || !alert) return set_error(error, SLUICE_E_ARGUMENT, -1, "no client or no room for the alert given");
    if (!client->streaming) return set_error(error, SLUICE_E_STATE, -1, "no alert stream: call sluice_watch_alerts first");
    if (dropped) *dropped = 0;
    for (;;) {
        const Sluice__V1__WatchAlertsResponse *batch = client->batch ? client->batch->watch_alerts : NULL;
        if (batch && client->batch_pos < batch->n_alerts) {
            copy_alert(batch->alerts[client->batch_pos++], alert);
            return SLUICE_OK;
        }
        if (client->fd < 0)
            return set_error(error, SLUICE_E_IO, -1, "the alert stream ended; call sluice_watch_alerts to follow again");
        if (!frame_buffered(client)) {
            /* Waiting is not a failure here: the stream stays open after a timeout. */
            int events = wait_for(client->fd, POLLIN, client->timeout_ms);
            if (events == 0) return set_error(error, SLUICE_E_TIMEOUT, -1, "no alert within %d ms", client->timeout_ms);
            if (events < 0) return fail(client, error, SLUICE_E_IO, "poll failed: %s", strerror(errno));
        }
        const uint8_t *payload = NULL;
        size_t length = 0;
        int status = read_frame(client, &payload, &length, error);
        if (status != SLUICE_OK) return status;
        Sluice__V1__Response *response = sluice__v1__response__unpack(NULL, length, payload);
        if (!response) return fail(client, error, SLUICE_E_PROTOCOL, "the daemon's frame is not a valid sluice.v1.Response");
        if (response->id != client->stream_id) {
            unsigned long long got = (unsigned long long)response->id;
            sluice__v1__response__free_unpacked(response, NULL);
            return fail(client, error, SLUICE_E_PROTOCOL, "a frame for request %llu arrived on the alert stream", got);
        }
        if ((status = take_batch(client, response, error)) != SLUICE_OK) return status;
        if (dropped) *dropped += client->batch->watch_alerts->dropped;
    }
}
