// The yardstick for sluice-table-bench: a minimal C open-addressing GCRA table, single-threaded,
// no locks, no eviction, no reclamation: 16-byte entries (key hash, TAT) at load <= 0.5.
// Same key stream as sluice-table-bench (xorshift64 -> key index -> 64-bit mix).
//   cc -O2 -o gcra_table gcra_table.c && ./gcra_table 1000000 3
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

typedef struct { uint64_t key; int64_t tat; } entry;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static uint64_t mix(uint64_t z) {
    z = (z ^ (z >> 33)) * 0xff51afd7ed558ccdULL;
    z = (z ^ (z >> 33)) * 0xc4ceb9fe1a85ec53ULL;
    return z ^ (z >> 33);
}

static entry *table;
static uint64_t mask;

static int decide(uint64_t key, int64_t now, int64_t interval, int64_t tolerance) {
    uint64_t i = key & mask;
    while (table[i].key != 0 && table[i].key != key) i = (i + 1) & mask;
    if (table[i].key == 0) { table[i].key = key; table[i].tat = 0; }
    int64_t base = table[i].tat > now ? table[i].tat : now;
    int64_t next = base + interval;
    if (next - tolerance > now) return 0;
    table[i].tat = next;
    return 1;
}

int main(int argc, char **argv) {
    uint64_t keys = argc > 1 ? strtoull(argv[1], 0, 10) : 1000000;
    double seconds = argc > 2 ? atof(argv[2]) : 3;
    uint64_t capacity = 1;
    while (capacity < keys * 2) capacity <<= 1;
    mask = capacity - 1;
    table = calloc(capacity, sizeof(entry));
    int64_t interval = 3600000000000LL / 1000, tolerance = interval * 1000;
    for (uint64_t k = 0; k < keys; k++) decide(mix(k + 1) | 1, now_ns(), interval, tolerance);
    for (int clock_each = 1; clock_each >= 0; clock_each--) {
        uint64_t random = 0x9E3779B97F4A7C15ULL, done = 0, allowed = 0;
        int64_t start = now_ns(), deadline = start + (int64_t)(seconds * 1e9), now = start;
        while (1) {
            for (int j = 0; j < 1024; j++) {
                random ^= random << 13; random ^= random >> 7; random ^= random << 17;
                uint64_t k = (uint64_t)(((unsigned __int128)random * keys) >> 64);
                if (clock_each) now = now_ns();
                allowed += decide(mix(k + 1) | 1, now, interval, tolerance);
            }
            done += 1024;
            if (now_ns() >= deadline) break;
        }
        double rate = done / ((now_ns() - start) / 1e9);
        printf("c_baseline.decisions_per_s.%s %.0f\n", clock_each ? "clock_each" : "clock_cached", rate);
        fprintf(stderr, "(allowed %llu)\n", (unsigned long long)allowed);
    }
    printf("c_baseline.bytes_per_key %.1f\n", (double)(capacity * sizeof(entry)) / keys);
    return 0;
}
