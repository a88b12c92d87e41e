#ifndef SLUICE_SUPPORT_H
#define SLUICE_SUPPORT_H

/// Hints the processor to bring the cache line at `address` closer. Never faults, even for an
/// address that is stale or unmapped, so it may be used with racy hints.
static inline void sluice_prefetch(const void *address) {
    __builtin_prefetch(address, 1, 3);
}

#include "sluice_epoll.h"

#endif
