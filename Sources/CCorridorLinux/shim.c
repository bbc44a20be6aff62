#ifdef __linux__
#define _GNU_SOURCE
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>
#include "CCorridorLinux.h"

int corridor_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

int corridor_epoll_ctl(int epfd, int op, int fd, unsigned int events) {
    struct epoll_event event = { .events = events, .data = { .u64 = (unsigned long long)fd } };
    return epoll_ctl(epfd, op, fd, &event);
}

int corridor_epoll_wait(int epfd, int *fds, unsigned int *events, int max, int timeout_ms) {
    struct epoll_event ready[256];
    if (max > 256) max = 256;
    int n = epoll_wait(epfd, ready, max, timeout_ms);
    for (int i = 0; i < n; i++) {
        fds[i] = (int)ready[i].data.u64;
        events[i] = ready[i].events;
    }
    return n;
}

int corridor_eventfd(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }

int corridor_accept(int fd, void *address, unsigned int *length) {
    socklen_t size = *length;
    int client = accept4(fd, (struct sockaddr *)address, &size, SOCK_NONBLOCK | SOCK_CLOEXEC);
    *length = size;
    return client;
}

int corridor_stream_socket(int family) { return socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0); }

int corridor_pipe(int fds[2]) { return pipe2(fds, O_NONBLOCK | O_CLOEXEC); }

int corridor_pipe_capacity(int fd) { return fcntl(fd, F_GETPIPE_SZ); }

int corridor_pipe_resize(int fd, int bytes) { return fcntl(fd, F_SETPIPE_SZ, bytes); }

long corridor_splice(int from, int to, unsigned long length) {
    return (long)splice(from, NULL, to, NULL, length, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
}

unsigned int corridor_epollin(void) { return EPOLLIN; }
unsigned int corridor_epollout(void) { return EPOLLOUT; }
unsigned int corridor_epollhup(void) { return EPOLLHUP; }
unsigned int corridor_epollerr(void) { return EPOLLERR; }
unsigned int corridor_epollexclusive(void) { return EPOLLEXCLUSIVE; }
#endif
