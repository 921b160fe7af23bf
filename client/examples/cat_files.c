/*
 * cat_files FILE...: reads every FILE (on one stripefs mount) into one buffer registered once
 * against the mount, QUEUE requests of CHUNK bytes in flight across files, and writes the
 * files to standard output one after another (like cat). No registration per file: each
 * file is opened for requests, and requests name (file, buffer, offsets, length).
 *
 *   cargo build --release -p stripefs-client    # makes target/release/libstripefs_client.a
 *   cc -I client/include client/examples/cat_files.c target/release/libstripefs_client.a \
 *      -lpthread -ldl -lm -o cat_files
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "stripefs.h"

#define CHUNK (1u << 20)
#define QUEUE 8u

static int fail(const char *what, long err) {
    fprintf(stderr, "cat_files: %s: %s\n", what, strerror((int)-err));
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

/* One chunk of one file: which file, where in it. */
struct chunk {
    uint32_t file;
    uint64_t offset;
};

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: cat_files FILE...\n");
        return 2;
    }
    uint32_t nfiles = (uint32_t)argc - 1;
    uint64_t *handles = calloc(nfiles, sizeof *handles);
    uint64_t *sizes = calloc(nfiles, sizeof *sizes);
    if (!handles || !sizes) return fail("calloc", -ENOMEM);

    stripefs_client *client;
    stripefs_buffer *buffer;
    uint64_t buf;
    int rc = stripefs_connect(argv[1], &client);
    if (rc < 0) return fail("stripefs_connect", rc);
    rc = stripefs_buffer_new((uint64_t)QUEUE * CHUNK, &buffer);
    if (rc < 0) return fail("stripefs_buffer_new", rc);
    rc = stripefs_register_buffer(client, buffer, &buf); /* once, for every file */
    if (rc < 0) return fail("stripefs_register_buffer", rc);
    for (uint32_t i = 0; i < nfiles; i++) {
        int fd = open(argv[i + 1], O_RDONLY | O_CLOEXEC);
        if (fd < 0) return fail(argv[i + 1], -errno);
        struct stat st;
        if (fstat(fd, &st) != 0) return fail("fstat", -errno);
        sizes[i] = (uint64_t)st.st_size;
        rc = stripefs_open(client, fd, &handles[i]);
        if (rc < 0) return fail("stripefs_open", rc);
        close(fd); /* the file handle does not need the descriptor */
    }

    /* Rounds of up to QUEUE chunks, taken across files in order; slot n of the buffer holds
     * the n-th chunk of the round. */
    uint32_t file = 0;
    uint64_t offset = 0;
    while (file < nfiles) {
        struct stripefs_file_request req[QUEUE];
        struct chunk chunks[QUEUE];
        uint32_t n = 0;
        while (n < QUEUE && file < nfiles) {
            if (offset >= sizes[file]) {
                file++;
                offset = 0;
                continue;
            }
            chunks[n] = (struct chunk){.file = file, .offset = offset};
            req[n] = (struct stripefs_file_request){
                .file = handles[file],
                .buffer = buf,
                .op = STRIPEFS_OP_READ,
                .file_offset = offset,
                .buffer_offset = (uint64_t)n * CHUNK,
                .len = CHUNK,
                .tag = n,
            };
            offset += CHUNK;
            n++;
        }
        for (uint32_t sent = 0; sent < n;) {
            rc = stripefs_submit_files(client, req + sent, n - sent);
            if (rc < 0) return fail("stripefs_submit_files", rc);
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
            if (got[i] < 0) return fail(argv[chunks[i].file + 1], got[i]);
            if (write_all(data + (uint64_t)i * CHUNK, (uint64_t)got[i]) != 0)
                return fail("write", -errno);
        }
    }

    for (uint32_t i = 0; i < nfiles; i++) {
        rc = stripefs_close(client, handles[i]);
        if (rc < 0) return fail("stripefs_close", rc);
    }
    rc = stripefs_unregister(client, buf);
    if (rc < 0) return fail("stripefs_unregister", rc);
    stripefs_buffer_free(buffer);
    stripefs_disconnect(client);
    free(handles);
    free(sizes);
    return 0;
}
