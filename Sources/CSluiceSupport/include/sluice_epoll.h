#ifndef SLUICE_EPOLL_H
#define SLUICE_EPOLL_H

// epoll for the load harness (SluiceLoad): Swift's Glibc module does not include sys/epoll.h,
// and `struct epoll_event` is packed, so these wrappers pass plain integers instead.
#ifdef __linux__
#include <stdint.h>
#include <sys/epoll.h>
#include <time.h>

enum {
    SLUICE_EPOLL_IN = EPOLLIN,
    SLUICE_EPOLL_OUT = EPOLLOUT,
    SLUICE_EPOLL_ERR = EPOLLERR,
    SLUICE_EPOLL_HUP = EPOLLHUP,
};

static inline int sluice_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

/// Adds (`modify` 0) or changes (`modify` 1) the events watched on `fd`; `cookie` comes back with them.
static inline int sluice_epoll_watch(int epoll, int fd, uint32_t events, uint64_t cookie, int modify) {
    struct epoll_event event = {.events = events, .data = {.u64 = cookie}};
    return epoll_ctl(epoll, modify ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &event);
}

static inline int sluice_epoll_forget(int epoll, int fd) { return epoll_ctl(epoll, EPOLL_CTL_DEL, fd, NULL); }

/// Waits up to `timeout_ns` (nanosecond resolution, epoll_pwait2) for at most `capacity` (<= 64)
/// events; writes their cookies and event bits. Returns the count, or -1 with errno.
static inline int sluice_epoll_wait(int epoll, uint64_t *cookies, uint32_t *events, int capacity, int64_t timeout_ns) {
    struct epoll_event ready[64];
    if (capacity > 64) capacity = 64;
    struct timespec timeout = {.tv_sec = timeout_ns / 1000000000, .tv_nsec = timeout_ns % 1000000000};
    int n = epoll_pwait2(epoll, ready, capacity, &timeout, NULL);
    for (int i = 0; i < n; i++) {
        cookies[i] = ready[i].data.u64;
        events[i] = ready[i].events;
    }
    return n;
}
#endif

#endif
