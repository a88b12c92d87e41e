#ifndef SLUICE_SUPPORT_H
#define SLUICE_SUPPORT_H

/// Hints the processor to bring the cache line at `address` closer. Never faults, even for an
/// address that is stale or unmapped, so it may be used with racy hints.
static inline void sluice_prefetch(const void *address) {
    __builtin_prefetch(address, 1, 3);
}

#include "sluice_epoll.h"

#if defined(__linux__) && defined(__GLIBC__)
#include <malloc.h>
/// Makes glibc give freed memory back to the system: allocations from `threshold` bytes up are
/// mapped on their own (and unmapped when freed) without the threshold growing as glibc would
/// otherwise make it. Returns whether glibc took the setting.
static inline int sluice_malloc_map_from(int threshold) { return mallopt(M_MMAP_THRESHOLD, threshold); }
/// Returns the free memory of every glibc arena to the system (malloc_trim). Returns whether
/// any was returned.
static inline int sluice_malloc_trim(void) { return malloc_trim(0); }
/// Bytes the program holds from malloc: in the arenas and mapped on their own (mallinfo2).
/// Walks every arena under its lock: for a scrape, not for a hot path.
static inline unsigned long long sluice_malloc_in_use(void) {
    struct mallinfo2 info = mallinfo2();
    return (unsigned long long)info.uordblks + (unsigned long long)info.hblkhd;
}
#else
static inline int sluice_malloc_map_from(int threshold) { (void)threshold; return 0; }
static inline int sluice_malloc_trim(void) { return 0; }
static inline unsigned long long sluice_malloc_in_use(void) { return 0; }
#endif

#endif
