/*
 * read_file FILE: reads FILE (on a stripefs mount) into a registered buffer, QUEUE requests
 * of CHUNK bytes in flight, and writes it to standard output in order.
 *
 *   cargo build --release -p stripefs-client    # makes target/release/libstripefs_client.a
 *   cc -I client/include client/examples/read_file.c target/release/libstripefs_client.a \
 *      -lpthread -ldl -lm -o read_file
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "stripefs.h"

#define CHUNK (1u << 20)
#define QUEUE 4u

static int fail(const char *what, long err) {
    fprintf(stderr, "read_file: %s: %s\n", what, strerror((int)-err));
    return 1;
}

static int write_all(const char *p, uint64_t n) {
    while (n > 0) {
        ssize_t w = write(STDOUT_FILENO, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w;
        n -= (uint64_t)w;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: read_file FILE\n");
        return 2;
    }
    int fd = open(argv[1], O_RDONLY | O_CLOEXEC);
    if (fd < 0) return fail(argv[1], -errno);
    struct stat st;
    if (fstat(fd, &st) != 0) return fail("fstat", -errno);
    uint64_t size = (uint64_t)st.st_size;

    stripefs_client *client;
    stripefs_buffer *buffer;
    uint64_t handle;
    int rc = stripefs_connect(argv[1], &client);
    if (rc < 0) return fail("stripefs_connect", rc);
    rc = stripefs_buffer_new((uint64_t)QUEUE * CHUNK, &buffer);
    if (rc < 0) return fail("stripefs_buffer_new", rc);
    rc = stripefs_register(client, fd, buffer, &handle);
    if (rc < 0) return fail("stripefs_register", rc);
    close(fd); /* the registration does not need the descriptor any more */

    /* Rounds of QUEUE requests, slot i of the buffer for the i-th chunk of the round. */
    for (uint64_t at = 0; at < size; at += (uint64_t)QUEUE * CHUNK) {
        struct stripefs_request req[QUEUE];
        uint32_t n = 0;
        for (; n < QUEUE && at + (uint64_t)n * CHUNK < size; n++) {
            req[n] = (struct stripefs_request){
                .handle = handle,
                .op = STRIPEFS_OP_READ,
                .file_offset = at + (uint64_t)n * CHUNK,
                .buffer_offset = (uint64_t)n * CHUNK,
                .len = CHUNK,
                .tag = n,
            };
        }
        for (uint32_t sent = 0; sent < n;) {
            rc = stripefs_submit(client, req + sent, n - sent);
            if (rc < 0) return fail("stripefs_submit", rc);
            sent += (uint32_t)rc;
        }
        int64_t got[QUEUE];
        for (uint32_t done = 0; done < n;) {
            struct stripefs_completion c[QUEUE];
            rc = stripefs_wait(client, c, QUEUE, n - done);
            if (rc < 0) return fail("stripefs_wait", rc);
            for (int i = 0; i < rc; i++) got[c[i].tag] = c[i].result;
            done += (uint32_t)rc;
        }
        const char *data = stripefs_buffer_data(buffer);
        for (uint32_t i = 0; i < n; i++) {
            if (got[i] < 0) return fail("read", got[i]);
            if (write_all(data + (uint64_t)i * CHUNK, (uint64_t)got[i]) != 0)
                return fail("write", -errno);
        }
    }

    rc = stripefs_unregister(client, handle);
    if (rc < 0) return fail("stripefs_unregister", rc);
    stripefs_buffer_free(buffer);
    stripefs_disconnect(client);
    return 0;
}
