// Linux calls the splice data plane needs that Swift's Glibc module does not export (they sit
// behind _GNU_SOURCE or in headers the module leaves out). Plain C types only, so this header
// includes no system header and cannot clash with Glibc's module; shim.c implements them.
#ifndef C_CORRIDOR_LINUX_H
#define C_CORRIDOR_LINUX_H

int corridor_epoll_create(void);
/// Adds, modifies or removes `fd` (op: 1 add, 2 remove, 3 modify), with `fd` as the event's data.
int corridor_epoll_ctl(int epfd, int op, int fd, unsigned int events);
/// Waits for up to `max` (at most 256) events; fills `fds` and `events`. The count, or -1 (errno).
int corridor_epoll_wait(int epfd, int *fds, unsigned int *events, int max, int timeout_ms);
int corridor_eventfd(void);
/// accept4, non-blocking and close-on-exec; `address` is a sockaddr_storage.
int corridor_accept(int fd, void *address, unsigned int *length);
int corridor_stream_socket(int family);
int corridor_pipe(int fds[2]);
/// A pipe's capacity in bytes (F_GETPIPE_SZ), or -1 (errno).
int corridor_pipe_capacity(int fd);
/// Sets a pipe's capacity to at least `bytes` (F_SETPIPE_SZ): the new capacity, or -1 (errno;
/// EPERM past fs.pipe-max-size or the user's pipe-user-pages-soft, unless privileged).
int corridor_pipe_resize(int fd, int bytes);
/// Moves up to `length` bytes from `from` to `to` (one of them a pipe) without copying them
/// through user space. Non-blocking.
long corridor_splice(int from, int to, unsigned long length);

unsigned int corridor_epollin(void);
unsigned int corridor_epollout(void);
unsigned int corridor_epollhup(void);
unsigned int corridor_epollerr(void);
unsigned int corridor_epollexclusive(void);

#endif
