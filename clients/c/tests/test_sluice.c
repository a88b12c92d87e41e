/*
 * Tests of libsluice against a real sluiced (started by tests/run.sh with --clock request, so
 * time comes from each check's now_ms) and against a misbehaving fake server in this process.
 *   test_sluice UNIX_ENDPOINT TCP_ENDPOINT [ANOMALY_ENDPOINT]
 * The third endpoint is a daemon with anomaly detection on (no warm-up), for outcomes and alerts.
 * Prints one line per failed expectation and a summary; exit status 1 if anything failed.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "sluice.h"
#include "sluice/v1/sluice.pb-c.h"

static int failures, expectations;
static const char *anomaly_endpoint;

#define EXPECT(condition, ...)                                                                                         \
    do {                                                                                                               \
        expectations++;                                                                                                \
        if (!(condition)) {                                                                                            \
            failures++;                                                                                                \
            printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #condition);                                                \
            printf(__VA_ARGS__);                                                                                       \
            printf("\n");                                                                                              \
        }                                                                                                              \
    } while (0)

static const char *unix_endpoint, *tcp_endpoint;
static const uint64_t T0 = 1767225600000; /* 2026-01-01, in ms */

/* A key no other test (or earlier run) has used. */
static const char *fresh_key(const char *prefix) {
    static char keys[64][96];
    static int next;
    char *key = keys[next++ % 64];
    snprintf(key, sizeof keys[0], "%s:%ld:%d", prefix, (long)getpid(), next);
    return key;
}

static sluice_check inline_check(const char *key, uint64_t limit, uint64_t period_ms, uint64_t now_ms) {
    sluice_check check = {.key = key, .limit = limit, .period_ms = period_ms, .now_ms = now_ms};
    return check;
}

static uint64_t now_ms(void) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return (uint64_t)now.tv_sec * 1000 + (uint64_t)now.tv_nsec / 1000000;
}

/* Twenty failed logins naming twenty users from `ip`: credential stuffing. */
static int stuff(sluice_client *client, const char *ip, uint64_t at, uint32_t *recorded, sluice_error *error) {
    static char names[20][32];
    sluice_outcome outcomes[20];
    for (int i = 0; i < 20; i++) {
        snprintf(names[i], sizeof names[i], "user%d", i);
        outcomes[i] = (sluice_outcome){.subject = names[i], .ip = ip, .route = "POST /login", .status = 401,
                                       .time_ms = at + (uint64_t)i * 100};
    }
    return sluice_report_outcomes(client, outcomes, 20, recorded, error);
}

/* Against the daemon with anomaly detection on (run.sh's third endpoint). */
static void test_anomaly(const char *endpoint) {
    sluice_error error;
    sluice_client *reporter = sluice_connect(endpoint, 5000, &error);
    sluice_client *follower = sluice_connect(endpoint, 5000, &error);
    EXPECT(reporter && follower, "connect %s: %s", endpoint, error.message);
    if (!reporter || !follower) {
        sluice_close(reporter);
        sluice_close(follower);
        return;
    }
    /* A check may carry the caller's address and route. */
    sluice_check check = {.key = fresh_key("anomaly"), .limit = 100, .period_ms = 1000, .ip = "198.51.100.4",
                         .route = "GET /api/items/7"};
    sluice_verdict verdict;
    int status = sluice_check_one(reporter, &check, &verdict, &error);
    EXPECT(status == SLUICE_OK && verdict.allowed, "check with ip and route: %s", error.message);

    uint64_t start = now_ms();
    uint32_t recorded = 0;
    status = stuff(reporter, "192.0.2.31", start, &recorded, &error);
    EXPECT(status == SLUICE_OK && recorded == 20, "report: %s (recorded %u)", error.message, recorded);

    const char *kinds[] = {"credential_stuffing", NULL};
    status = sluice_watch_alerts(follower, kinds, NULL, 10, &error);
    EXPECT(status == SLUICE_OK, "watch: %s", error.message);
    sluice_alert alert;
    uint64_t dropped = 99;
    status = sluice_next_alert(follower, &alert, &dropped, &error);
    EXPECT(status == SLUICE_OK, "first alert: %s", error.message);
    EXPECT(strcmp(alert.kind, "credential_stuffing") == 0 && strcmp(alert.scope, "ip") == 0 &&
               strcmp(alert.ip, "192.0.2.31") == 0 && alert.score >= 1 && alert.time_ms >= start,
           "alert %s %s %s %f", alert.kind, alert.scope, alert.ip, alert.score);
    EXPECT(dropped == 0, "dropped %llu", (unsigned long long)dropped);
    EXPECT(sluice_ping(follower, &error) == SLUICE_E_STATE, "a following client takes no other call: %s",
           sluice_status_name(error.code));

    /* Nothing new: a timeout, and the stream stays open. */
    sluice_set_timeout(follower, 200);
    EXPECT(sluice_next_alert(follower, &alert, NULL, &error) == SLUICE_E_TIMEOUT, "%s", sluice_status_name(error.code));
    EXPECT(sluice_connected(follower), "the stream closed on a timeout");

    /* A new burst is pushed to the follower. */
    sluice_set_timeout(follower, 5000);
    status = stuff(reporter, "192.0.2.32", start + 10000, NULL, &error);
    EXPECT(status == SLUICE_OK, "report: %s", error.message);
    status = sluice_next_alert(follower, &alert, NULL, &error);
    EXPECT(status == SLUICE_OK && strcmp(alert.ip, "192.0.2.32") == 0, "pushed alert: %s %s", sluice_status_name(status),
           alert.ip);

    /* Bad input is refused with a reason. */
    sluice_outcome bad[2] = {{.subject = "a", .status = 200}, {.subject = "b", .status = 42}};
    status = sluice_report_outcomes(reporter, bad, 2, NULL, &error);
    EXPECT(status == SLUICE_INVALID_ARGUMENT && error.check_index == 1, "bad status: %s (%d)", sluice_status_name(status),
           error.check_index);
    sluice_client *refused = sluice_connect(endpoint, 5000, &error);
    if (refused) {
        status = sluice_watch_alerts(refused, NULL, NULL, 5000, &error);
        EXPECT(status == SLUICE_INVALID_ARGUMENT, "recent 5000: %s", sluice_status_name(status));
        EXPECT(sluice_next_alert(refused, &alert, NULL, &error) == SLUICE_E_STATE, "no stream after a refusal");
        EXPECT(sluice_ping(refused, &error) == SLUICE_OK, "a refused watch leaves the client usable: %s", error.message);
        sluice_close(refused);
    }
    sluice_close(reporter);
    sluice_close(follower);
}

/* Against the anomaly daemon, after test_anomaly reported stuffing from 192.0.2.31 (blocked for
 * an hour there): every verdict field, and load reports. run.sh put c-vip in tier vip. */
static void test_verdict_fields_and_load(const char *endpoint) {
    sluice_error error;
    sluice_client *client = sluice_connect(endpoint, 5000, &error);
    EXPECT(client != NULL, "connect %s: %s", endpoint, error.message);
    if (!client) return;
    sluice_check check = {.key = "c-vip", .rule = "api"};
    sluice_verdict verdict;
    memset(&verdict, 0x5a, sizeof verdict);
    int status = sluice_check_one(client, &check, &verdict, &error);
    EXPECT(status == SLUICE_OK && verdict.allowed, "vip check: %s", error.message);
    EXPECT(strcmp(verdict.tier, "vip") == 0 && verdict.multiplier == 4.0 && verdict.limit == 400,
           "tier %s multiplier %f limit %llu", verdict.tier, verdict.multiplier, (unsigned long long)verdict.limit);
    EXPECT(verdict.anomaly[0] == 0 && !verdict.would_deny && verdict.would_deny_reason == SLUICE_REASON_UNSPECIFIED &&
               !verdict.has_reputation && verdict.reputation == 0,
           "anomaly '%s' would_deny %d reputation %d", verdict.anomaly, verdict.would_deny, verdict.has_reputation);

    /* The stuffing address is blocked; the verdict says by what. It may take the detector a
     * drain (100 ms) to respond. */
    sluice_check blocked = {.key = fresh_key("victim"), .rule = "api", .ip = "192.0.2.31"};
    for (int i = 0; i < 100; i++) {
        status = sluice_check_one(client, &blocked, &verdict, &error);
        if (status != SLUICE_OK || !verdict.allowed) break;
        usleep(100000);
    }
    EXPECT(status == SLUICE_OK && !verdict.allowed && verdict.reason == SLUICE_REASON_ANOMALY &&
               strcmp(verdict.anomaly, "credential_stuffing") == 0 && verdict.tier[0] == 0 && verdict.multiplier == 1.0,
           "blocked: %s allowed %d reason %d anomaly '%s'", sluice_status_name(status), verdict.allowed, verdict.reason,
           verdict.anomaly);

    /* Load reports: a healthy service keeps its whole capacity; a slow, failing one is cut,
     * the vip tier last. */
    sluice_load_report report = {.service = "checkout", .in_flight = 3, .latency_p50_us = 2000, .latency_p99_us = 10000};
    sluice_load load;
    sluice_tier_load tiers[4];
    status = sluice_report_load(client, &report, &load, tiers, 4, &error);
    EXPECT(status == SLUICE_OK && load.load_factor == 1.0 && load.tier_count == 2 && strcmp(tiers[0].tier, "vip") == 0 &&
               tiers[1].tier[0] == 0,
           "healthy: %s factor %f tiers %zu", error.message, load.load_factor, load.tier_count);
    uint64_t healthy_p99 = load.smoothed_p99_us;
    report = (sluice_load_report){.service = "checkout", .latency_p99_us = 5000000, .error_rate = 0.5};
    for (int i = 0; i < 3 && status == SLUICE_OK; i++) status = sluice_report_load(client, &report, &load, tiers, 1, &error);
    EXPECT(status == SLUICE_OK && load.load_factor < 1.0 && load.smoothed_p99_us > healthy_p99 && load.tier_count == 2 &&
               strcmp(tiers[0].tier, "vip") == 0,
           "loaded: %s factor %f p99 %llu", error.message, load.load_factor, (unsigned long long)load.smoothed_p99_us);
    status = sluice_report_load(client, &report, &load, NULL, 0, &error);
    EXPECT(status == SLUICE_OK, "no room for tiers is fine: %s", error.message);
    report.service = "not-a-service";
    EXPECT(sluice_report_load(client, &report, &load, NULL, 0, &error) == SLUICE_INVALID_ARGUMENT, "unknown service: %s",
           sluice_status_name(error.code));
    report.service = NULL;
    EXPECT(sluice_report_load(client, &report, &load, NULL, 0, &error) == SLUICE_E_ARGUMENT, "no service");
    report = (sluice_load_report){.service = "checkout", .error_rate = 2};
    EXPECT(sluice_report_load(client, &report, &load, NULL, 0, &error) == SLUICE_E_ARGUMENT, "error rate 2");
    report.error_rate = 0.0 / 0.0;
    EXPECT(sluice_report_load(client, &report, &load, NULL, 0, &error) == SLUICE_E_ARGUMENT, "error rate NaN");
    EXPECT(sluice_report_load(client, NULL, &load, NULL, 0, &error) == SLUICE_E_ARGUMENT, "no report");
    EXPECT(sluice_ping(client, &error) == SLUICE_OK, "refused reports leave the client usable: %s", error.message);
    sluice_close(client);
}

/* Against the daemon with anomaly detection off: outcomes are taken and ignored. */
static void test_outcomes_while_off(sluice_client *client) {
    sluice_error error;
    sluice_outcome outcome = {.subject = "someone", .ip = "203.0.113.5", .route = "POST /login", .status = 401};
    uint32_t recorded = 99;
    int status = sluice_report_outcomes(client, &outcome, 1, &recorded, &error);
    EXPECT(status == SLUICE_OK && recorded == 0, "report while off: %s (recorded %u)", error.message, recorded);
    EXPECT(sluice_report_outcomes(client, &outcome, 0, NULL, &error) == SLUICE_E_ARGUMENT, "an empty report");
}

static void test_connect_errors(void) {
    sluice_error error;
    EXPECT(sluice_connect("unix:/nonexistent/dir/sluice.sock", 500, &error) == NULL, "connected to nothing");
    EXPECT(error.code == SLUICE_E_CONNECT, "code %s: %s", sluice_status_name(error.code), error.message);
    EXPECT(sluice_connect("no-port-here", 500, &error) == NULL, "parsed a bad endpoint");
    EXPECT(error.code == SLUICE_E_ARGUMENT, "code %s: %s", sluice_status_name(error.code), error.message);
    EXPECT(sluice_connect("127.0.0.1:99999", 500, &error) == NULL && error.code == SLUICE_E_ARGUMENT, "port range: %s",
           error.message);
    EXPECT(sluice_connect("", 500, &error) == NULL && error.code == SLUICE_E_ARGUMENT, "empty endpoint");
    EXPECT(sluice_connect(NULL, 500, &error) == NULL && error.code == SLUICE_E_ARGUMENT, "NULL endpoint");
    /* A closed port on loopback: refused at once. */
    EXPECT(sluice_connect("127.0.0.1:1", 500, &error) == NULL && error.code == SLUICE_E_CONNECT, "closed port: %s",
           error.message);
    EXPECT(sluice_ping(NULL, &error) == SLUICE_E_ARGUMENT, "NULL client");
    sluice_close(NULL);
    /* Every daemon error code (sluice.v1.Error.Code 1 to 14) has its name. */
    static const char *const names[] = {"invalid_argument", "unknown_rule", "unknown_tenant", "frame_too_large",
        "malformed_message", "overloaded", "internal", "unsupported", "shutting_down", "forbidden",
        "invalid_configuration", "unavailable", "unauthenticated", "quota_exceeded"};
    for (int code = 1; code <= 14; code++)
        EXPECT(strcmp(sluice_status_name(code), names[code - 1]) == 0, "code %d: %s", code, sluice_status_name(code));
    EXPECT(strcmp(sluice_status_name(15), "daemon_error") == 0, "a newer daemon's code");
    EXPECT(strlen(SLUICE_VERSION) >= 5, "SLUICE_VERSION from VERSION");
}

static void test_ping(const char *endpoint) {
    sluice_error error;
    sluice_client *client = sluice_connect(endpoint, 2000, &error);
    EXPECT(client != NULL, "connect %s: %s", endpoint, error.message);
    if (!client) return;
    EXPECT(sluice_connected(client), "not connected");
    for (int i = 0; i < 3; i++) EXPECT(sluice_ping(client, &error) == SLUICE_OK, "ping: %s", error.message);
    sluice_close(client);
}

static void test_inline_gcra(sluice_client *client) {
    sluice_error error;
    sluice_verdict verdict;
    const char *key = fresh_key("gcra");
    /* 3 per second, burst 3: three pass back to back, the fourth waits P/L = 334 ms (rounded up). */
    for (int i = 0; i < 3; i++) {
        sluice_check check = inline_check(key, 3, 1000, T0);
        EXPECT(sluice_check_one(client, &check, &verdict, &error) == SLUICE_OK, "check: %s", error.message);
        EXPECT(verdict.allowed, "check %d denied", i);
        EXPECT(verdict.remaining == (uint64_t)(2 - i), "remaining %llu", (unsigned long long)verdict.remaining);
        EXPECT(verdict.limit == 3, "limit %llu", (unsigned long long)verdict.limit);
        EXPECT(verdict.algorithm == SLUICE_ALGORITHM_GCRA, "algorithm %d", verdict.algorithm);
        EXPECT(verdict.retry_after_ms == 0, "retry_after %llu", (unsigned long long)verdict.retry_after_ms);
    }
    sluice_check check = inline_check(key, 3, 1000, T0);
    EXPECT(sluice_check_one(client, &check, &verdict, &error) == SLUICE_OK, "check: %s", error.message);
    EXPECT(!verdict.allowed, "the fourth was allowed");
    EXPECT(verdict.reason == SLUICE_REASON_OVER_LIMIT, "reason %d", verdict.reason);
    EXPECT(verdict.retry_after_ms == 334, "retry_after %llu", (unsigned long long)verdict.retry_after_ms);
    /* A peek at the same moment consumes nothing and says no. */
    check.peek = true;
    EXPECT(sluice_check_one(client, &check, &verdict, &error) == SLUICE_OK && !verdict.allowed, "peek");
    /* After P/L one more passes. */
    check = inline_check(key, 3, 1000, T0 + 334);
    check.peek = true;
    EXPECT(sluice_check_one(client, &check, &verdict, &error) == SLUICE_OK && verdict.allowed, "peek after wait");
    check.peek = false;
    EXPECT(sluice_check_one(client, &check, &verdict, &error) == SLUICE_OK && verdict.allowed, "after wait");
    EXPECT(sluice_check_one(client, &check, &verdict, &error) == SLUICE_OK && !verdict.allowed, "then denied again");
    /* Hits over the whole burst: denied as exceeding capacity, waiting will not help. */
    check = inline_check(fresh_key("gcra-cap"), 3, 1000, T0);
    check.hits = 4;
    EXPECT(sluice_check_one(client, &check, &verdict, &error) == SLUICE_OK, "big check: %s", error.message);
    EXPECT(!verdict.allowed && verdict.reason == SLUICE_REASON_EXCEEDS_CAPACITY, "reason %d", verdict.reason);
    check.hits = 3;
    EXPECT(sluice_check_one(client, &check, &verdict, &error) == SLUICE_OK && verdict.allowed,
           "the denied big check consumed something");
}

static void test_ratelimit_headers(sluice_client *client) {
    sluice_error error;
    sluice_verdict verdict;
    const char *key = fresh_key("headers");
    sluice_check check = inline_check(key, 2, 60000, T0);
    EXPECT(sluice_check_one(client, &check, &verdict, &error) == SLUICE_OK, "check: %s", error.message);
    char lines[256];
    int n = sluice_ratelimit_headers(&verdict, "api", 60, SLUICE_HEADERS_DRAFT, lines, sizeof lines);
    EXPECT(strcmp(lines, "RateLimit-Policy: \"api\";q=2;w=60\r\nRateLimit: \"api\";r=1;t=30\r\n") == 0, "draft: %s", lines);
    EXPECT(n == (int)strlen(lines), "length %d", n);
    EXPECT(sluice_check_one(client, &check, &verdict, &error) == SLUICE_OK, "second: %s", error.message);
    EXPECT(sluice_check_one(client, &check, &verdict, &error) == SLUICE_OK && !verdict.allowed, "third allowed");
    n = sluice_ratelimit_headers(&verdict, NULL, 0, SLUICE_HEADERS_DRAFT | SLUICE_HEADERS_LEGACY, lines, sizeof lines);
    EXPECT(strstr(lines, "RateLimit-Policy: \"inline\";q=2\r\n") && strstr(lines, "X-RateLimit-Remaining: 0\r\n") &&
               strstr(lines, "Retry-After: 30\r\n"),
           "denied: %s", lines);
    /* Too small a buffer: truncated, terminated, and the length needed returned. */
    char small[8];
    int needed = sluice_ratelimit_headers(&verdict, NULL, 0, SLUICE_HEADERS_DRAFT, small, sizeof small);
    EXPECT(needed > (int)sizeof small && strlen(small) == sizeof small - 1, "needed %d, got '%s'", needed, small);
}

static void test_rules_and_errors(sluice_client *client) {
    sluice_error error;
    sluice_verdict verdict;
    sluice_check check = {.key = fresh_key("rule"), .rule = "default", .now_ms = T0};
    EXPECT(sluice_check_one(client, &check, &verdict, &error) == SLUICE_OK, "default rule: %s", error.message);
    EXPECT(verdict.allowed && strcmp(verdict.rule, "default") == 0, "rule \"%s\"", verdict.rule);

    check.rule = "no-such-rule";
    int status = sluice_check_one(client, &check, &verdict, &error);
    EXPECT(status == SLUICE_UNKNOWN_RULE, "status %s", sluice_status_name(status));
    EXPECT(error.code == SLUICE_UNKNOWN_RULE && error.check_index == 0, "error %d index %d", error.code,
           error.check_index);
    EXPECT(strstr(error.message, "no-such-rule") != NULL, "message \"%s\"", error.message);
    EXPECT(sluice_connected(client), "a daemon error closed the connection");

    /* A bad limit in check 3 of 5: the whole batch fails, nothing consumed, index 3 named. */
    sluice_check batch[5];
    const char *key = fresh_key("batch-error");
    for (int i = 0; i < 5; i++) batch[i] = inline_check(key, 2, 1000, T0);
    batch[3].period_ms = 0;
    sluice_verdict verdicts[5];
    status = sluice_check_batch(client, batch, 5, verdicts, &error);
    EXPECT(status == SLUICE_INVALID_ARGUMENT && error.check_index == 3, "status %s index %d: %s",
           sluice_status_name(status), error.check_index, error.message);
    sluice_check probe = inline_check(key, 2, 1000, T0);
    probe.hits = 2;
    EXPECT(sluice_check_one(client, &probe, &verdict, &error) == SLUICE_OK && verdict.allowed,
           "the failed batch consumed something");

    /* Client-side argument errors. */
    EXPECT(sluice_check_batch(client, batch, 0, verdicts, &error) == SLUICE_E_ARGUMENT, "empty batch");
    EXPECT(sluice_check_batch(client, batch, SLUICE_MAX_BATCH + 1, verdicts, &error) == SLUICE_E_ARGUMENT, "huge batch");
    EXPECT(sluice_check_batch(client, NULL, 1, verdicts, &error) == SLUICE_E_ARGUMENT, "NULL checks");
    EXPECT(sluice_ping(client, &error) == SLUICE_OK, "still serving: %s", error.message);
}

static void test_batch(sluice_client *client) {
    sluice_error error;
    enum { N = 1000 };
    static sluice_check checks[N];
    static sluice_verdict verdicts[N];
    const char *key = fresh_key("batch");
    /* 1,000 checks of one key with limit 600: exactly the first 600 pass, in order. */
    for (int i = 0; i < N; i++) checks[i] = inline_check(key, 600, 60000, T0);
    EXPECT(sluice_check_batch(client, checks, N, verdicts, &error) == SLUICE_OK, "batch: %s", error.message);
    int allowed = 0, first_denied = -1;
    for (int i = 0; i < N; i++) {
        if (verdicts[i].allowed) allowed++;
        else if (first_denied < 0) first_denied = i;
    }
    EXPECT(allowed == 600 && first_denied == 600, "allowed %d, first denied %d", allowed, first_denied);
}

static void test_pipeline(sluice_client *client) {
    sluice_error error;
    enum { REQUESTS = 20000 };
    const char *key = fresh_key("pipe");
    /* 20,000 requests queued before any answer is read: more than the socket buffers hold, so
       the flush must read while it writes. Limit 10,000 per minute: the first 10,000 pass. */
    uint64_t first_id = 0, id = 0;
    for (int i = 0; i < REQUESTS; i++) {
        sluice_check check = inline_check(key, 10000, 60000, T0);
        int status = sluice_submit(client, &check, 1, &id, &error);
        if (status != SLUICE_OK) {
            EXPECT(status == SLUICE_OK, "submit %d: %s", i, error.message);
            return;
        }
        if (i == 0) first_id = id;
    }
    EXPECT(sluice_pending(client) == REQUESTS, "pending %zu", sluice_pending(client));
    sluice_verdict verdict;
    EXPECT(sluice_ping(client, &error) == SLUICE_E_STATE, "a synchronous call while answers are pending");
    int allowed = 0, in_order = 1;
    for (int i = 0; i < REQUESTS; i++) {
        size_t count = 0;
        uint64_t got = 0;
        int status = sluice_collect(client, &got, &verdict, 1, &count, &error);
        if (status != SLUICE_OK) {
            EXPECT(status == SLUICE_OK, "collect %d: %s", i, error.message);
            return;
        }
        if (got != first_id + (uint64_t)i || count != 1) in_order = 0;
        if (verdict.allowed) allowed++;
    }
    EXPECT(in_order, "answers out of order");
    EXPECT(allowed == 10000, "allowed %d", allowed);
    EXPECT(sluice_collect(client, NULL, &verdict, 1, NULL, &error) == SLUICE_E_STATE, "collect with nothing pending");

    /* Batches of several checks, and a collect with too little room. */
    sluice_check checks[4];
    for (int i = 0; i < 4; i++) checks[i] = inline_check(fresh_key("pipe-batch"), 5, 1000, T0);
    EXPECT(sluice_submit(client, checks, 4, NULL, &error) == SLUICE_OK, "submit: %s", error.message);
    checks[1].rule = "no-such-rule";
    EXPECT(sluice_submit(client, checks, 4, NULL, &error) == SLUICE_OK, "submit: %s", error.message);
    checks[1].rule = NULL;
    EXPECT(sluice_submit(client, checks, 2, NULL, &error) == SLUICE_OK, "submit: %s", error.message);
    sluice_verdict four[4];
    size_t count = 0;
    EXPECT(sluice_collect(client, NULL, four, 2, &count, &error) == SLUICE_E_STATE, "collect into too little room");
    EXPECT(sluice_collect(client, NULL, four, 4, &count, &error) == SLUICE_OK && count == 4, "collect 4: %s",
           error.message);
    int status = sluice_collect(client, NULL, four, 4, &count, &error);
    EXPECT(status == SLUICE_UNKNOWN_RULE && error.check_index == 1, "the error answer: %s", sluice_status_name(status));
    EXPECT(sluice_collect(client, NULL, four, 4, &count, &error) == SLUICE_OK && count == 2,
           "the request after an error answer: %s", error.message);
    EXPECT(four[0].remaining == 3, "remaining %llu (the failed request consumed?)", (unsigned long long)four[0].remaining);
}

static void test_leases(sluice_client *client) {
    sluice_error error;
    sluice_verdict verdict;
    sluice_check check = inline_check(fresh_key("lease"), 2, 30000, T0);
    check.algorithm = SLUICE_ALGORITHM_CONCURRENCY;
    uint64_t leases[2];
    for (int i = 0; i < 2; i++) {
        EXPECT(sluice_check_one(client, &check, &verdict, &error) == SLUICE_OK && verdict.allowed, "lease %d", i);
        EXPECT(verdict.lease_id != 0, "no lease id");
        leases[i] = verdict.lease_id;
    }
    EXPECT(sluice_check_one(client, &check, &verdict, &error) == SLUICE_OK && !verdict.allowed, "a third lease");
    bool released = false;
    EXPECT(sluice_release(client, &check, leases[0], &released, &error) == SLUICE_OK && released, "release: %s",
           error.message);
    EXPECT(sluice_release(client, &check, leases[0], &released, &error) == SLUICE_OK && !released, "released twice");
    EXPECT(sluice_check_one(client, &check, &verdict, &error) == SLUICE_OK && verdict.allowed, "lease after release");
}

/* MARK: a misbehaving server */

enum fake_mode { FAKE_CLOSE, FAKE_GARBAGE, FAKE_HUGE_LENGTH, FAKE_WRONG_ID, FAKE_SILENT, FAKE_CLOSE_THEN_PING };

typedef struct {
    int listener;
    enum fake_mode mode;
} fake_server;

static int read_exact(int fd, uint8_t *buffer, size_t length) {
    size_t done = 0;
    while (done < length) {
        ssize_t n = read(fd, buffer + done, length - done);
        if (n <= 0) return -1;
        done += (size_t)n;
    }
    return 0;
}

/* Reads one request frame; returns its id, or 0. */
static uint64_t read_request(int fd) {
    uint8_t header[4];
    if (read_exact(fd, header, 4) != 0) return 0;
    uint32_t n = (uint32_t)header[0] << 24 | (uint32_t)header[1] << 16 | (uint32_t)header[2] << 8 | header[3];
    uint8_t *body = malloc(n ? n : 1);
    uint64_t id = 0;
    if (body && read_exact(fd, body, n) == 0) {
        Sluice__V1__Request *request = sluice__v1__request__unpack(NULL, n, body);
        if (request) {
            id = request->id;
            sluice__v1__request__free_unpacked(request, NULL);
        }
    }
    free(body);
    return id;
}

static void send_response(int fd, Sluice__V1__Response *response) {
    size_t n = sluice__v1__response__get_packed_size(response);
    uint8_t *frame = malloc(4 + n);
    frame[0] = (uint8_t)(n >> 24), frame[1] = (uint8_t)(n >> 16), frame[2] = (uint8_t)(n >> 8), frame[3] = (uint8_t)n;
    sluice__v1__response__pack(response, frame + 4);
    if (write(fd, frame, 4 + n) < 0) perror("fake server write");
    free(frame);
}

static void answer_ping(int fd, uint64_t id) {
    Sluice__V1__PingResponse ping = SLUICE__V1__PING_RESPONSE__INIT;
    Sluice__V1__Response response = SLUICE__V1__RESPONSE__INIT;
    response.id = id;
    response.body_case = SLUICE__V1__RESPONSE__BODY_PING;
    response.ping = &ping;
    send_response(fd, &response);
}

static void *fake_serve(void *argument) {
    fake_server *server = argument;
    int fd = accept(server->listener, NULL, NULL);
    if (fd < 0) return NULL;
    uint64_t id = read_request(fd);
    switch (server->mode) {
    case FAKE_CLOSE: break;
    case FAKE_GARBAGE: {
        uint8_t frame[] = {0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0xff};
        if (write(fd, frame, sizeof frame) < 0) perror("write");
        break;
    }
    case FAKE_HUGE_LENGTH: {
        uint8_t frame[] = {0x7f, 0xff, 0xff, 0xff, 1, 2, 3};
        if (write(fd, frame, sizeof frame) < 0) perror("write");
        break;
    }
    case FAKE_WRONG_ID: answer_ping(fd, id + 41); break;
    case FAKE_SILENT: {
        char buffer[16];
        while (read(fd, buffer, sizeof buffer) > 0) {} /* until the client hangs up */
        break;
    }
    case FAKE_CLOSE_THEN_PING: {
        close(fd);
        fd = accept(server->listener, NULL, NULL); /* the client's reconnect */
        if (fd < 0) return NULL;
        answer_ping(fd, read_request(fd));
        break;
    }
    }
    /* Let the client read what was sent before the hang-up. */
    usleep(20000);
    close(fd);
    return NULL;
}

static void test_bad_server(enum fake_mode mode, int expected, const char *what) {
    char path[108];
    snprintf(path, sizeof path, "/tmp/sluice-c-fake-%ld-%d.sock", (long)getpid(), (int)mode);
    unlink(path);
    fake_server server = {.listener = socket(AF_UNIX, SOCK_STREAM, 0), .mode = mode};
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    snprintf(address.sun_path, sizeof address.sun_path, "%s", path);
    if (bind(server.listener, (struct sockaddr *)&address, sizeof address) != 0 || listen(server.listener, 4) != 0) {
        EXPECT(0, "fake server on %s could not listen", path);
        return;
    }
    pthread_t thread;
    pthread_create(&thread, NULL, fake_serve, &server);
    char endpoint[120];
    snprintf(endpoint, sizeof endpoint, "unix:%s", path);
    sluice_error error;
    sluice_client *client = sluice_connect(endpoint, 300, &error);
    EXPECT(client != NULL, "%s: connect: %s", what, error.message);
    if (client) {
        struct timespec start, end;
        clock_gettime(CLOCK_MONOTONIC, &start);
        int status = sluice_ping(client, &error);
        clock_gettime(CLOCK_MONOTONIC, &end);
        EXPECT(status == expected, "%s: got %s (%s), wanted %s", what, sluice_status_name(status), error.message,
               sluice_status_name(expected));
        EXPECT(error.message[0] != '\0', "%s: no message", what);
        if (mode == FAKE_SILENT) {
            double ms = (double)(end.tv_sec - start.tv_sec) * 1e3 + (double)(end.tv_nsec - start.tv_nsec) / 1e6;
            EXPECT(ms >= 290 && ms < 3000, "timed out after %.0f ms, not about 300", ms);
        }
        if (mode != FAKE_CLOSE_THEN_PING) EXPECT(!sluice_connected(client), "%s: the broken connection was kept", what);
        if (mode == FAKE_CLOSE_THEN_PING) {
            /* The first ping failed on the closed connection; this one reconnects and succeeds. */
            EXPECT(status == SLUICE_E_IO, "close: %s", sluice_status_name(status));
            status = sluice_ping(client, &error);
            EXPECT(status == SLUICE_OK, "reconnect: %s (%s)", sluice_status_name(status), error.message);
        }
        sluice_close(client);
    }
    pthread_join(thread, NULL);
    close(server.listener);
    unlink(path);
}

/* A TCP listener that requires a token: none is refused, a wrong one too; the right one acts
 * for its tenant (acme) only, an empty tenant being acme's. */
static void test_token(const char *endpoint, const char *token) {
    sluice_error error;
    sluice_check check = {.key = "c-token", .rule = "api", .now_ms = 1767225600000ULL};
    sluice_verdict verdict;
    sluice_client *anonymous = sluice_connect(endpoint, 5000, &error);
    EXPECT(anonymous != NULL, "connect %s: %s", endpoint, error.message);
    if (anonymous) {
        int status = sluice_check_one(anonymous, &check, &verdict, &error);
        EXPECT(status == SLUICE_UNAUTHENTICATED, "a check without a token: %s (%s)", sluice_status_name(status), error.message);
        sluice_close(anonymous);
    }
    char wrong[256];
    snprintf(wrong, sizeof wrong, "%s", token);
    size_t length = strlen(wrong);
    if (length > 0) wrong[length - 1] = wrong[length - 1] == 'A' ? 'B' : 'A';
    sluice_client *refused = sluice_connect_token(endpoint, wrong, 5000, &error);
    EXPECT(refused == NULL && error.code == SLUICE_UNAUTHENTICATED, "a wrong token: %s", error.message);
    sluice_close(refused);
    sluice_client *client = sluice_connect_token(endpoint, token, 5000, &error);
    EXPECT(client != NULL, "connect with the token: %s", error.message);
    if (!client) return;
    EXPECT(sluice_check_one(client, &check, &verdict, &error) == SLUICE_OK && verdict.allowed, "a check of acme: %s", error.message);
    check.tenant = "acme";
    EXPECT(sluice_check_one(client, &check, &verdict, &error) == SLUICE_OK && !verdict.allowed,
           "the empty tenant was acme's: its one a minute is spent");
    check.tenant = "globex";
    int status = sluice_check_one(client, &check, &verdict, &error);
    EXPECT(status == SLUICE_FORBIDDEN && error.check_index == 0, "another tenant: %s (%s)", sluice_status_name(status), error.message);
    EXPECT(sluice_ping(client, &error) == SLUICE_OK, "ping after a refusal: %s", error.message);
    sluice_close(client);
}

/* The same daemon's TLS listener: the token over TLS with its authority; refused without it. */
static void test_tls(const char *endpoint, const char *authority, const char *token) {
    sluice_error error;
    sluice_options options = {.timeout_ms = 5000, .token = token, .tls_ca = authority};
    sluice_client *client = sluice_connect_with(endpoint, &options, &error);
    EXPECT(client != NULL, "connect over TLS: %s", error.message);
    if (client) {
        sluice_check check = {.key = "c-tls", .rule = "api", .now_ms = 1767225600000ULL};
        sluice_verdict verdict;
        EXPECT(sluice_check_one(client, &check, &verdict, &error) == SLUICE_OK && verdict.allowed, "a check over TLS: %s", error.message);
        check.tenant = "globex";
        EXPECT(sluice_check_one(client, &check, &verdict, &error) == SLUICE_FORBIDDEN, "another tenant over TLS: %s", error.message);
        for (int i = 0; i < 50; i++) EXPECT(sluice_ping(client, &error) == SLUICE_OK, "ping over TLS: %s", error.message);
        sluice_close(client);
    }
    sluice_options untrusted = {.timeout_ms = 5000, .token = token, .tls = true};
    sluice_client *stranger = sluice_connect_with(endpoint, &untrusted, &error);
    EXPECT(stranger == NULL && error.code == SLUICE_E_CONNECT && strstr(error.message, "certificate"),
           "the system's roots do not trust the test authority: %s", error.message);
    sluice_close(stranger);
    sluice_client *plain = sluice_connect_token(endpoint, token, 5000, &error);
    EXPECT(plain == NULL && error.code < 0, "plain TCP to a TLS port: %s (%s)", sluice_status_name(error.code), error.message);
    sluice_close(plain);
    sluice_options missing = {.tls_ca = "/nonexistent/ca.pem"};
    EXPECT(sluice_connect_with(endpoint, &missing, &error) == NULL && error.code == SLUICE_E_ARGUMENT, "an unreadable authority: %s",
           error.message);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s UNIX_ENDPOINT TCP_ENDPOINT [ANOMALY_ENDPOINT [TOKEN_ENDPOINT TOKEN [TLS_ENDPOINT AUTHORITY]]]\n", argv[0]);
        return 2;
    }
    unix_endpoint = argv[1];
    tcp_endpoint = argv[2];
    anomaly_endpoint = argc > 3 ? argv[3] : NULL;
    const char *token_endpoint = argc > 5 ? argv[4] : NULL, *token = argc > 5 ? argv[5] : NULL;
    const char *tls_endpoint = argc > 7 ? argv[6] : NULL, *authority = argc > 7 ? argv[7] : NULL;

    test_connect_errors();
    test_ping(unix_endpoint);
    test_ping(tcp_endpoint);
    const char *endpoints[] = {unix_endpoint, tcp_endpoint};
    for (int i = 0; i < 2; i++) {
        sluice_error error;
        sluice_client *client = sluice_connect(endpoints[i], 5000, &error);
        EXPECT(client != NULL, "connect %s: %s", endpoints[i], error.message);
        if (!client) continue;
        test_inline_gcra(client);
        test_ratelimit_headers(client);
        test_rules_and_errors(client);
        test_batch(client);
        test_pipeline(client);
        test_leases(client);
        test_outcomes_while_off(client);
        sluice_close(client);
    }
    if (anomaly_endpoint) {
        test_anomaly(anomaly_endpoint);
        test_verdict_fields_and_load(anomaly_endpoint);
    }
    if (token_endpoint) test_token(token_endpoint, token);
    if (tls_endpoint) test_tls(tls_endpoint, authority, token);
    test_bad_server(FAKE_CLOSE, SLUICE_E_IO, "a server that hangs up");
    test_bad_server(FAKE_GARBAGE, SLUICE_E_PROTOCOL, "a server that sends garbage");
    test_bad_server(FAKE_HUGE_LENGTH, SLUICE_E_PROTOCOL, "a server that sends an absurd length");
    test_bad_server(FAKE_WRONG_ID, SLUICE_E_PROTOCOL, "a server that answers the wrong request");
    test_bad_server(FAKE_SILENT, SLUICE_E_TIMEOUT, "a server that never answers");
    test_bad_server(FAKE_CLOSE_THEN_PING, SLUICE_E_IO, "a server that hangs up, then serves the reconnect");

    printf("%d expectations, %d failed\n", expectations, failures);
    return failures ? 1 : 0;
}
