/*
 * stripefs.h - registered I/O on a mounted stripefs, from C and C++.
 *
 * A program registers its own memory (a buffer made here: a sealed memfd mapped in the
 * program) against a file opened on the mount, once, and then reads and writes the file
 * straight into that memory; the daemon attaches the buffer to every device the file spans.
 * Link with libstripefs_client (.a: add -lpthread -ldl -lm; or .so).
 *
 *     stripefs_client *c;  stripefs_buffer *b;  uint64_t h;
 *     int fd = open("/mnt/stripefs/data.bin", O_RDONLY);
 *     stripefs_connect("/mnt/stripefs/data.bin", &c);     // finds the daemon from the path
 *     stripefs_buffer_new(8 << 20, &b);
 *     stripefs_register(c, fd, b, &h);                     // once per (file, buffer)
 *     int64_t n = stripefs_read(c, h, 0, 0, 8 << 20);      // file offset, buffer offset, len
 *     const char *bytes = stripefs_buffer_data(b);
 *
 * Or register the buffer once against the whole mount and open files apart: any file then
 * reads into (or writes from) the buffer with no registration per file.
 *
 *     uint64_t buf, file;
 *     stripefs_register_buffer(c, b, &buf);                 // once: one attachment per device
 *     stripefs_open(c, fd, &file);                          // once per file
 *     n = stripefs_read_file(c, file, buf, 0, 0, 8 << 20);  // file, buffer, offsets, len
 *
 * Conventions: every function returns 0, a count or a byte count on success, and a negative
 * errno on failure (-ENOENT: no stripefs mount holds the path; -EBADF: unknown handle, or a
 * descriptor whose open mode does not allow the operation; -EXDEV: descriptor not on the
 * mount; -EFAULT: range outside the buffer; -EBUSY: ring full; -ENOTCONN: daemon gone).
 * A client may be used by several threads at once. Handles are valid only on the client
 * that made them. Closing the client (or the process dying) releases its registrations.
 */
#ifndef STRIPEFS_H
#define STRIPEFS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct stripefs_client stripefs_client;
typedef struct stripefs_buffer stripefs_buffer;

#define STRIPEFS_OP_READ 1u
#define STRIPEFS_OP_WRITE 2u

/* One request: move len bytes between file_offset and buffer_offset of registration handle. */
struct stripefs_request {
    uint64_t handle;
    uint32_t op;       /* STRIPEFS_OP_READ or STRIPEFS_OP_WRITE */
    uint32_t reserved; /* 0 */
    uint64_t file_offset;
    uint64_t buffer_offset;
    uint64_t len;
    uint64_t tag; /* below 2^63; comes back in the completion */
};

/* One request naming a file (from stripefs_open) and a buffer (from
 * stripefs_register_buffer): move len bytes between file_offset and buffer_offset. */
struct stripefs_file_request {
    uint64_t file;
    uint64_t buffer;
    uint32_t op;       /* STRIPEFS_OP_READ or STRIPEFS_OP_WRITE */
    uint32_t reserved; /* 0 */
    uint64_t file_offset;
    uint64_t buffer_offset;
    uint64_t len;
    uint64_t tag; /* below 2^63; comes back in the completion */
};

/* One completion: bytes transferred (short only at end of file), or a negative errno. */
struct stripefs_completion {
    uint64_t tag;
    int64_t result;
};

/* Connects to the daemon serving the mount that holds path_on_mount (a file or directory on
 * it): the user.stripefs.control attribute of the mount, else the well-known socket
 * /run/stripefs/mnt-<hash of the canonical mountpoint>.sock. Before sending anything, checks
 * that the path is on a stripefs mount and that the socket is served by the mount's owner
 * (or root): -EPERM otherwise. */
int stripefs_connect(const char *path_on_mount, stripefs_client **client);
/* Connects to a control socket by its path, trusted as given (no check of whose it is);
 * entries: ring size (power of two, 0: 128). */
int stripefs_connect_socket(const char *socket_path, uint32_t entries, stripefs_client **client);
/* Closes the connection; every registration made through it is released. */
void stripefs_disconnect(stripefs_client *client);

/* A zeroed buffer of len bytes (rounded up to whole pages). */
int stripefs_buffer_new(uint64_t len, stripefs_buffer **buffer);
/* Drops the program's reference; registrations keep the memory until unregistered. */
void stripefs_buffer_free(stripefs_buffer *buffer);
uint64_t stripefs_buffer_len(const stripefs_buffer *buffer);
/* The buffer's bytes. Valid until the buffer migrates (ask again after stripefs_migrate).
 * Reads in flight write these bytes; read them after the request's completion. */
void *stripefs_buffer_data(const stripefs_buffer *buffer);

/* Registers buffer against the file open as fd (on the mount). Reads need fd opened for
 * reading, writes need it opened for writing. */
int stripefs_register(stripefs_client *client, int fd, const stripefs_buffer *buffer,
                      uint64_t *handle);
int stripefs_unregister(stripefs_client *client, uint64_t handle);
/* Moves the registration's buffer to new pages while requests may be in flight (they
 * complete normally); the contents are kept. */
int stripefs_migrate(stripefs_client *client, uint64_t handle);

/* Registers buffer against the whole mount: one attachment per device, and the handle serves
 * requests on every file opened with stripefs_open (unregister and migrate it as above). */
int stripefs_register_buffer(stripefs_client *client, const stripefs_buffer *buffer,
                             uint64_t *handle);
/* Opens the file open as fd (on the mount) for requests with buffers registered against
 * the mount; access follows fd's open mode. fd may be closed afterwards. Deleting the file
 * closes the handle (-EBADF). */
int stripefs_open(stripefs_client *client, int fd, uint64_t *file);
int stripefs_close(stripefs_client *client, uint64_t file);

/* Blocking single requests: bytes transferred or -errno. */
int64_t stripefs_read(stripefs_client *client, uint64_t handle, uint64_t file_offset,
                      uint64_t buffer_offset, uint64_t len);
int64_t stripefs_write(stripefs_client *client, uint64_t handle, uint64_t file_offset,
                       uint64_t buffer_offset, uint64_t len);

int64_t stripefs_read_file(stripefs_client *client, uint64_t file, uint64_t buffer,
                           uint64_t file_offset, uint64_t buffer_offset, uint64_t len);
int64_t stripefs_write_file(stripefs_client *client, uint64_t file, uint64_t buffer,
                            uint64_t file_offset, uint64_t buffer_offset, uint64_t len);

/* Queues up to count requests with at most one system call; returns how many were queued
 * (fewer when the ring is full: reap, then submit the rest). */
int stripefs_submit(stripefs_client *client, const struct stripefs_request *requests,
                    uint32_t count);
/* The same for requests naming files and buffers; their completions come back through
 * stripefs_wait and stripefs_poll like the others. */
int stripefs_submit_files(stripefs_client *client, const struct stripefs_file_request *requests,
                          uint32_t count);
/* Sleeps on the completion doorbell until min completions are ready (or nothing is in
 * flight); stores up to max; returns how many. */
int stripefs_wait(stripefs_client *client, struct stripefs_completion *completions,
                  uint32_t max, uint32_t min);
/* Like stripefs_wait, spinning instead of sleeping. */
int stripefs_wait_polling(stripefs_client *client, struct stripefs_completion *completions,
                          uint32_t max, uint32_t min);
/* Stores up to max completions that are ready now; never waits. */
int stripefs_poll(stripefs_client *client, struct stripefs_completion *completions,
                  uint32_t max);

#ifdef __cplusplus
}
#endif

#endif /* STRIPEFS_H */
