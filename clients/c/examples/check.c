/*
 * Asks the daemon whether KEY may do one more thing now, under RULE.
 *   check-example ENDPOINT KEY [RULE]      e.g. check-example unix:/tmp/sluice.sock login:203.0.113.7
 * Exit status: 0 allowed, 1 denied, 2 error.
 */
#include <stdio.h>
#include <time.h>

#include "sluice.h"

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s ENDPOINT KEY [RULE]\n", argv[0]);
        return 2;
    }
    sluice_error error;
    sluice_client *client = sluice_connect(argv[1], 1000, &error);
    if (!client) {
        fprintf(stderr, "error (%s): %s\n", sluice_status_name(error.code), error.message);
        return 2;
    }
    /* now_ms is read only by a daemon started with --clock request; giving it costs nothing. */
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    sluice_check check = {.key = argv[2], .rule = argc > 3 ? argv[3] : "default",
                          .now_ms = (uint64_t)now.tv_sec * 1000 + (uint64_t)now.tv_nsec / 1000000};
    sluice_verdict verdict;
    int status = sluice_check_one(client, &check, &verdict, &error);
    sluice_close(client);
    if (status != SLUICE_OK) {
        fprintf(stderr, "error (%s): %s\n", sluice_status_name(status), error.message);
        return 2;
    }
    printf("%s: limit %llu, remaining %llu, retry after %llu ms, reset after %llu ms\n",
           verdict.allowed ? "allowed" : "denied", (unsigned long long)verdict.limit,
           (unsigned long long)verdict.remaining, (unsigned long long)verdict.retry_after_ms,
           (unsigned long long)verdict.reset_after_ms);
    return verdict.allowed ? 0 : 1;
}
