/*
 * libsluice: the C client of the Sluice rate-limiting daemon.
 *
 *   sluice_error error;
 *   sluice_client *client = sluice_connect("unix:/tmp/sluice.sock", 1000, &error);
 *   if (!client) { fprintf(stderr, "%s\n", error.message); return 1; }
 *   sluice_check check = { .key = "login:203.0.113.7", .rule = "default" };
 *   sluice_verdict verdict;
 *   if (sluice_check_one(client, &check, &verdict, &error) == SLUICE_OK && !verdict.allowed)
 *       printf("retry in %llu ms\n", (unsigned long long)verdict.retry_after_ms);
 *   sluice_close(client);
 *
 * Errors. Every call returns a status: SLUICE_OK (0); a positive number, which is the daemon's
 * own error code (the numbers of sluice.v1.Error.Code: SLUICE_UNKNOWN_RULE, ...); or a negative
 * number for what went wrong on this side (SLUICE_E_IO, SLUICE_E_TIMEOUT, ...). When a call
 * takes a `sluice_error *` (NULL is allowed) it fills it with the code and a sentence. No call
 * aborts, exits or prints; a closed, broken or lying connection is an error code, never a crash.
 *
 * Broken connections. When the connection breaks or times out, the client closes it and the
 * call returns SLUICE_E_IO or SLUICE_E_TIMEOUT. Requests that were in flight are lost: the daemon
 * may or may not have counted them, and their answers can no longer be collected. The next call
 * connects again (with the connect timeout) before doing its work; if that fails it returns
 * SLUICE_E_CONNECT and the one after tries again.
 *
 * Threads. A client is one connection with one ordered stream of answers, and is NOT safe to
 * share between threads without a lock of your own around every call. Use one client per thread
 * (connections are cheap for the daemon), or pipeline on one client from one thread.
 *
 * Memory. The library allocates only inside a client (buffers that grow to the largest frame
 * used) and frees everything in sluice_close. Strings passed in are copied before the call
 * returns; verdicts are written into memory the caller owns.
 */
#ifndef SLUICE_H
#define SLUICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The library's public functions: the only symbols libsluice.so exports (it is built with
 * -fvisibility=hidden; protobuf-c's generated code and the internals stay private). */
#if defined(__GNUC__) || defined(__clang__)
#define SLUICE_API __attribute__((visibility("default")))
#else
#define SLUICE_API
#endif

/* SLUICE_VERSION: the version, generated from the repository's VERSION file. */
#include "sluice_version.h"

/* The largest batch the daemon accepts in one request. */
#define SLUICE_MAX_BATCH 1000

typedef enum sluice_status {
    SLUICE_OK = 0,

    /* The daemon's error codes (sluice.v1.Error.Code); see docs/PROTOCOL.md. */
    SLUICE_INVALID_ARGUMENT = 1,
    SLUICE_UNKNOWN_RULE = 2,
    SLUICE_UNKNOWN_TENANT = 3,
    SLUICE_FRAME_TOO_LARGE = 4,
    SLUICE_MALFORMED_MESSAGE = 5,
    SLUICE_OVERLOADED = 6,
    SLUICE_INTERNAL = 7,
    SLUICE_UNSUPPORTED = 8,
    SLUICE_SHUTTING_DOWN = 9,
    SLUICE_FORBIDDEN = 10,       /* the identity may not make this request, or not for that tenant */
    SLUICE_INVALID_CONFIGURATION = 11, /* a reload found the file invalid; the one in force stays */
    SLUICE_UNAVAILABLE = 12,     /* the daemon lacks what the request needs (a store, a snapshot path) */
    SLUICE_UNAUTHENTICATED = 13, /* no token, or a token that is not valid (docs/SECURITY.md) */
    SLUICE_QUOTA_EXCEEDED = 14,  /* the tenant is over a quota; retry later */

    /* This library's own. */
    SLUICE_E_ARGUMENT = -1, /* a bad argument to a call of this library */
    SLUICE_E_CONNECT = -2,  /* could not connect (or reconnect) to the endpoint */
    SLUICE_E_TIMEOUT = -3,  /* no progress within the timeout; the connection was closed */
    SLUICE_E_IO = -4,       /* the connection broke; it was closed and the next call reconnects */
    SLUICE_E_PROTOCOL = -5, /* the daemon's answer could not be understood; the connection was closed */
    SLUICE_E_NOMEM = -6,    /* out of memory */
    SLUICE_E_STATE = -7     /* the call does not fit the client's state (collect with nothing pending, a too small buffer) */
} sluice_status;

typedef struct sluice_error {
    int code;          /* a sluice_status */
    int check_index;   /* for a daemon error about one check of a batch, its index; otherwise -1 */
    char message[256]; /* one sentence, NUL-terminated */
} sluice_error;

typedef enum sluice_algorithm {
    SLUICE_ALGORITHM_DEFAULT = 0, /* the rule's, or the daemon's default (GCRA) for an inline limit */
    SLUICE_ALGORITHM_GCRA = 1,
    SLUICE_ALGORITHM_TOKEN_BUCKET = 2,
    SLUICE_ALGORITHM_SLIDING_WINDOW = 3,
    SLUICE_ALGORITHM_FIXED_WINDOW = 4,
    SLUICE_ALGORITHM_CONCURRENCY = 5
} sluice_algorithm;

typedef enum sluice_reason {
    SLUICE_REASON_UNSPECIFIED = 0,
    SLUICE_REASON_WITHIN_LIMIT = 1,
    SLUICE_REASON_OVER_LIMIT = 2,
    SLUICE_REASON_EXCEEDS_CAPACITY = 3, /* the hits exceed the whole limit: waiting will not help */
    SLUICE_REASON_BLOCKED = 4,
    SLUICE_REASON_REPUTATION = 5,       /* the subject's reputation is below the block threshold */
    SLUICE_REASON_SHED = 6,             /* the protected service is overloaded and the subject's tier is shed */
    SLUICE_REASON_ANOMALY = 7           /* anomaly detection responded to this subject or address with a block */
} sluice_reason;

/*
 * One check. Zero-initialise it and set what you need: `key`, and either `rule` or an inline
 * limit (`limit` and `period_ms`, optionally `burst` and `algorithm`).
 */
typedef struct sluice_check {
    const char *tenant;  /* NULL or "" is the default tenant */
    const char *key;     /* the identity the limit counts against; required */
    const char *subject; /* the caller reputation and tiers apply to; NULL or "" means `key` */
    const char *rule;    /* a configured rule; NULL or "" to use the inline limit below */
    uint64_t limit;      /* inline limit: units per period (leases, for concurrency) */
    uint64_t period_ms;  /* inline limit: the period (a lease's lifetime, for concurrency) */
    uint64_t burst;      /* inline limit: 0 means `limit` */
    sluice_algorithm algorithm;
    uint64_t hits;       /* the cost; 0 means 1 unless `peek` */
    bool peek;           /* ask without consuming (sends hits = 0) */
    uint64_t now_ms;     /* the time, read only by a daemon started with --clock request */
    const char *ip;      /* the caller's address, for anomaly detection (docs/ANOMALY.md); NULL or "" for none */
    const char *route;   /* "METHOD path" of the request, for anomaly detection; NULL or "" for none */
} sluice_check;

typedef struct sluice_verdict {
    bool allowed;
    uint64_t limit;          /* the effective limit that decided */
    uint64_t remaining;      /* units left after this check */
    uint64_t reset_after_ms; /* until the limit is fully recovered */
    uint64_t retry_after_ms; /* until the same check could pass; 0 when allowed */
    uint64_t lease_id;       /* an allowed concurrency check's lease, for sluice_release */
    uint32_t limit_index;    /* which of a rule's limits decided */
    sluice_algorithm algorithm;
    sluice_reason reason;
    char rule[128];          /* the rule that decided ("" for an inline limit); truncated if longer */
    /* Reputation (docs/REPUTATION.md): the subject's score, when has_reputation (the feature
     * applies to it), and the multiplier that scaled the limits (1.0 when none). */
    bool has_reputation;
    double reputation;
    double multiplier;
    /* Shadow mode: a feature rolled out in shadow would have denied this check, for
     * would_deny_reason; `allowed` is the enforced answer. */
    bool would_deny;
    sluice_reason would_deny_reason;
    char tier[128];          /* the subject's tier (docs/ADAPTIVE.md), "" when none */
    char anomaly[64];        /* the kind of the anomaly alert whose response applied ("credential_stuffing"), "" when none */
} sluice_verdict;

typedef struct sluice_client sluice_client;

/*
 * Connects to `endpoint`: "unix:PATH", a path containing '/', "HOST:PORT" or "[IPv6]:PORT".
 * `timeout_ms` bounds the connect and, afterwards, each wait for the daemon within a call
 * (0 or less: 5000 ms). Returns NULL with `error` filled on failure.
 */
SLUICE_API sluice_client *sluice_connect(const char *endpoint, int timeout_ms, sluice_error *error);

/*
 * The same, presenting an API token (`sluicectl token create`) first on this connection and on
 * every reconnection, for a TCP listener that requires one (docs/SECURITY.md). A refused token
 * returns NULL with error->code SLUICE_UNAUTHENTICATED (and the daemon's sentence); NULL or ""
 * presents none. The client keeps a copy of the token.
 */
SLUICE_API sluice_client *sluice_connect_token(const char *endpoint, const char *token, int timeout_ms, sluice_error *error);

/* Everything a connection may be given; zero-initialise it and set what you need. */
typedef struct sluice_options {
    int timeout_ms;          /* as sluice_connect's (0 or less: 5000 ms) */
    const char *token;       /* an API token presented first on every (re)connection; NULL or "": none */
    bool tls;                /* TLS to a TCP endpoint (implied by tls_ca and tls_cert) */
    const char *tls_ca;      /* the authority (PEM file) the daemon's certificate must chain to; NULL: the system's */
    const char *tls_cert;    /* this client's certificate (PEM), for a listener that requires one (mutual TLS) */
    const char *tls_key;     /* its private key (PEM) */
    const char *server_name; /* the name the daemon's certificate must carry; NULL: the endpoint's host */
} sluice_options;

/*
 * Connects with `options` (NULL: as sluice_connect). With TLS the daemon's certificate is always
 * verified (chain and name); a refused one returns NULL with SLUICE_E_CONNECT and OpenSSL's
 * reason. The client keeps copies of the strings.
 */
SLUICE_API sluice_client *sluice_connect_with(const char *endpoint, const sluice_options *options, sluice_error *error);

/* Closes the connection and frees the client. NULL is fine. */
SLUICE_API void sluice_close(sluice_client *client);

/* Changes the timeout used for connects and waits. */
SLUICE_API void sluice_set_timeout(sluice_client *client, int timeout_ms);

/* Whether the client holds an open connection now (it reconnects on the next call if not). */
SLUICE_API bool sluice_connected(const sluice_client *client);

/* A round trip to the daemon. */
SLUICE_API int sluice_ping(sluice_client *client, sluice_error *error);

/* Decides one check. */
SLUICE_API int sluice_check_one(sluice_client *client, const sluice_check *check, sluice_verdict *verdict, sluice_error *error);

/*
 * Decides `count` checks (1 ... SLUICE_MAX_BATCH) in one round trip; verdict i answers check i.
 * A daemon error (say, an unknown rule in check 3) fails the whole batch: nothing is consumed,
 * and error->check_index names the check.
 */
SLUICE_API int sluice_check_batch(sluice_client *client, const sluice_check *checks, size_t count, sluice_verdict *verdicts,
                       sluice_error *error);

/*
 * Returns concurrency lease `lease_id` early. `check` names the tenant, key and rule or inline
 * limit the lease was granted under (its hits, peek and subject are ignored). `released` (may be
 * NULL) says whether the lease was still held.
 */
SLUICE_API int sluice_release(sluice_client *client, const sluice_check *check, uint64_t lease_id, bool *released,
                   sluice_error *error);

/*
 * Pipelining: submit many requests, then collect their answers in the order submitted.
 *
 * sluice_submit encodes a batch of `count` checks (1 ... SLUICE_MAX_BATCH) and queues it; it
 * writes to the socket only when a lot is queued. `request_id` (may be NULL) receives its id.
 * sluice_flush sends everything queued. sluice_collect sends what is queued, then waits for the
 * answer to the oldest request not yet collected: it writes its id to `request_id` (may be NULL),
 * its verdicts to `verdicts` (room for `capacity`) and their number to `count`. A daemon error for
 * that one request is returned as its code, and the next collect goes on with the next request.
 * While a flush waits to write, it also reads answers, so a long pipeline cannot deadlock.
 */
SLUICE_API int sluice_submit(sluice_client *client, const sluice_check *checks, size_t count, uint64_t *request_id,
                  sluice_error *error);
SLUICE_API int sluice_flush(sluice_client *client, sluice_error *error);
SLUICE_API int sluice_collect(sluice_client *client, uint64_t *request_id, sluice_verdict *verdicts, size_t capacity,
                   size_t *count, sluice_error *error);

/* Requests submitted and not yet collected. */
SLUICE_API size_t sluice_pending(const sluice_client *client);

/*
 * Anomaly detection (docs/ANOMALY.md). What the upstream answered to a checked request: its
 * subject (or key), address, route and HTTP status. Zero-initialise and set what you know.
 */
typedef struct sluice_outcome {
    const char *tenant;
    const char *subject; /* required */
    const char *ip;
    const char *route;
    uint32_t status;     /* the HTTP status, 100 ... 599 */
    uint64_t time_ms;    /* when it was answered, ms since the epoch; 0 means now */
} sluice_outcome;

/*
 * Reports `count` outcomes (1 ... SLUICE_MAX_BATCH) in one round trip. `recorded` (may be NULL)
 * receives how many the daemon took: all, or 0 while its anomaly feature is off. A bad outcome
 * fails the whole report, error->check_index naming it.
 */
SLUICE_API int sluice_report_outcomes(sluice_client *client, const sluice_outcome *outcomes, size_t count, uint32_t *recorded,
                           sluice_error *error);

/* One anomaly alert; strings are truncated to fit and always NUL-terminated. */
typedef struct sluice_alert {
    uint64_t time_ms;  /* when it was raised, ms since the epoch */
    char scope[16];    /* "subject", "ip" or "global" */
    char subject[256]; /* for scope "subject" */
    char ip[64];       /* for scope "ip" */
    char tenant[128];
    char kind[64];     /* "rate_spike", "credential_stuffing", ... */
    double score;      /* how many times its threshold the signal stood at */
    char detail[256];  /* one sentence */
} sluice_alert;

/*
 * Follows the daemon's anomaly alerts (a WatchAlerts stream; docs/PROTOCOL.md, Streams).
 * `kinds` is a NULL-terminated list of alert kinds (NULL for every kind), `tenant` NULL for
 * every tenant, and `recent` (0 ... 1000) asks for that many recent alerts first. From then on
 * the client belongs to the stream: read it with sluice_next_alert, and make other calls on a
 * client of their own (they return SLUICE_E_STATE). After the stream ends (SLUICE_E_IO), calling
 * sluice_watch_alerts again reconnects and follows anew.
 */
SLUICE_API int sluice_watch_alerts(sluice_client *client, const char *const *kinds, const char *tenant, uint32_t recent,
                        sluice_error *error);

/*
 * The next alert of the stream, waiting up to the client's timeout. SLUICE_E_TIMEOUT means none
 * came: unlike other calls, the stream stays open; call again. `dropped` (may be NULL) receives
 * how many alerts the daemon dropped for this follower before this one (it did not read fast
 * enough). SLUICE_E_IO: the stream ended (the daemon closed it, say at shutdown).
 */
SLUICE_API int sluice_next_alert(sluice_client *client, sluice_alert *alert, uint64_t *dropped, sluice_error *error);

/*
 * Adaptive limits (docs/ADAPTIVE.md, Load shedding). How loaded a protected service is,
 * reported by it (say once a second); each report is one step of the daemon's controller for
 * that service, which a rule must name (`service:`). Zero-initialise and set what you measure.
 */
typedef struct sluice_load_report {
    const char *service;     /* required: the service (or tenant) the report is about */
    uint32_t in_flight;      /* requests in flight now */
    uint64_t latency_p50_us; /* latency percentiles over the last interval, microseconds */
    uint64_t latency_p99_us;
    double error_rate;       /* errors per request over the last interval, 0 to 1 */
} sluice_load_report;

/* One tier's share at the reported load. */
typedef struct sluice_tier_load {
    char tier[128];          /* "" for subjects without a tier */
    double multiplier;       /* what its limits get on the service's rules; 0: its checks are shed */
    double demand;           /* hits per second its subjects asked for, as the daemon measures them */
} sluice_tier_load;

/* The controller's answer to a load report. */
typedef struct sluice_load {
    double load_factor;      /* the share of its normal capacity to send the service (1: no shedding) */
    uint64_t smoothed_p99_us;/* the smoothed p99 latency the controller acts on */
    size_t tier_count;       /* tiers in the answer (may exceed the room given; those past it are left out) */
} sluice_load;

/*
 * Reports `report` and waits for the answer: `load` receives the factor, and `tiers` (room for
 * `capacity`; NULL with 0 when not wanted) each tier's multiplier and demand, highest priority
 * first, the last one ("") for subjects without a tier. A service no rule names is refused
 * SLUICE_E_INVALID_ARGUMENT.
 */
SLUICE_API int sluice_report_load(sluice_client *client, const sluice_load_report *report, sluice_load *load,
                                  sluice_tier_load *tiers, size_t capacity, sluice_error *error);

/* A stable name for a status: "ok", "unknown_rule", "io", ... */
SLUICE_API const char *sluice_status_name(int status);

/*
 * The HTTP fields that tell your caller its limit, for `verdict`, as header lines ending in
 * "\r\n" written to `out` (always terminated when `size` > 0): the IETF draft's RateLimit-Policy
 * and RateLimit (draft-ietf-httpapi-ratelimit-headers), with SLUICE_HEADERS_LEGACY the older
 * X-RateLimit-Limit/-Remaining/-Reset, and Retry-After when the verdict was denied. `policy`
 * names the policy (NULL: the verdict's rule, else "inline"); `window_seconds` is the limit's
 * period when it should be said (0: not said). Returns the length the lines need (as
 * snprintf: a result >= size means `out` was too small and holds a truncated copy).
 */
#define SLUICE_HEADERS_DRAFT 1
#define SLUICE_HEADERS_LEGACY 2
SLUICE_API int sluice_ratelimit_headers(const sluice_verdict *verdict, const char *policy, uint64_t window_seconds, int which, char *out,
                             size_t size);

#ifdef __cplusplus
}
#endif

#endif
