// The floor for scripts/bench-vs-redis.sh: a bare C length-prefixed echo server. One thread,
// epoll, nonblocking sockets; it reads 4-byte big-endian length-prefixed frames and writes each
// complete frame back unchanged (one write per read burst). No protobuf, no decisions: what any
// framed protocol over this socket pays at least.
//   cc -O2 -o echo_server echo_server.c && ./echo_server /tmp/echo.sock
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

typedef struct { int fd; uint8_t *in; size_t in_len, in_cap; uint8_t *out; size_t out_len, out_pos, out_cap; } conn;

static void grow(uint8_t **b, size_t *cap, size_t need) {
    if (need <= *cap) return;
    size_t c = *cap ? *cap : 65536;
    while (c < need) c *= 2;
    *b = realloc(*b, c);
    *cap = c;
    if (!*b) abort();
}

static void drop(int ep, conn *c) {
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->in);
    free(c->out);
    free(c);
}

static int flush_out(int ep, conn *c) {
    while (c->out_pos < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_pos, c->out_len - c->out_pos, MSG_NOSIGNAL);
        if (n > 0) { c->out_pos += (size_t)n; continue; }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
            epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
            return 0;
        }
        return -1;
    }
    c->out_len = c->out_pos = 0;
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: %s SOCKET_PATH\n", argv[0]); return 2; }
    signal(SIGPIPE, SIG_IGN);
    int listener = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    snprintf(addr.sun_path, sizeof addr.sun_path, "%s", argv[1]);
    unlink(argv[1]);
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(listener, 1024) != 0) { perror("listen"); return 1; }
    int ep = epoll_create1(0);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, listener, &lev);
    printf("echo_server ready on %s\n", argv[1]);
    fflush(stdout);
    struct epoll_event events[256];
    for (;;) {
        int n = epoll_wait(ep, events, 256, -1);
        for (int i = 0; i < n; i++) {
            conn *c = events[i].data.ptr;
            if (!c) {
                int fd;
                while ((fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    conn *nc = calloc(1, sizeof *nc);
                    nc->fd = fd;
                    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = nc};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
                }
                continue;
            }
            if (events[i].events & EPOLLOUT) {
                if (flush_out(ep, c) != 0) { drop(ep, c); continue; }
                if (c->out_len == 0) {
                    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                }
            }
            if (!(events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) continue;
            int closed = 0;
            for (;;) {
                grow(&c->in, &c->in_cap, c->in_len + 65536);
                ssize_t r = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len);
                if (r > 0) { c->in_len += (size_t)r; if ((size_t)r < 65536) break; continue; }
                if (r < 0 && errno == EINTR) continue;
                if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
                closed = 1;
                break;
            }
            // Echo every complete frame; keep a partial one for the next read.
            size_t pos = 0;
            while (c->in_len - pos >= 4) {
                uint8_t *p = c->in + pos;
                size_t len = (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
                if (len > (16u << 20)) { closed = 1; break; }
                if (c->in_len - pos < 4 + len) break;
                grow(&c->out, &c->out_cap, c->out_len + 4 + len);
                memcpy(c->out + c->out_len, p, 4 + len);
                c->out_len += 4 + len;
                pos += 4 + len;
            }
            memmove(c->in, c->in + pos, c->in_len - pos);
            c->in_len -= pos;
            if (closed || flush_out(ep, c) != 0) drop(ep, c);
        }
    }
}
