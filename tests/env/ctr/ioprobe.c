/* ioprobe: the IOChaos test target (tests/host_io_chaos.rs, tests/vm_io.rs).
 *
 * usage: ioprobe HELD REOPEN LOG [INTERVAL_MS]
 *
 * Opens HELD once and keeps that descriptor for its whole life; then, every INTERVAL_MS
 * (default 50), appends to LOG (opened O_APPEND, one write per line):
 *   <seq> held <us> <errno> <bytes> <hex of the first 8 bytes>     pread(4096) at 0 on the held fd
 *   <seq> reopen <us> <errno> <bytes> <hex>                        open+read(4096)+close of REOPEN
 *   <seq> stat <errno> <mode octal> <size>                          stat(REOPEN)
 * The first line is "fd <n> pid <pid>": the held descriptor. Errors never end the loop.
 * Built static by mk-oci-image.py into the test image as /bin/ioprobe. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static long long now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

static void hex8(const unsigned char *b, ssize_t n, char *out) {
    int i;
    out[0] = '-';
    out[1] = 0;
    for (i = 0; i < 8 && i < n; i++)
        sprintf(out + 2 * i, "%02x", b[i]);
}

static void logline(int log, const char *line) {
    if (write(log, line, strlen(line)) < 0) {
        /* nothing to do: the loop goes on */
    }
}

int main(int argc, char **argv) {
    static unsigned char buf[4096];
    char line[256], hx[20];
    long seq = 0;
    int held, log, interval = 50;
    if (argc < 4) {
        fprintf(stderr, "usage: ioprobe HELD REOPEN LOG [INTERVAL_MS]\n");
        return 64;
    }
    if (argc > 4) interval = atoi(argv[4]);
    log = open(argv[3], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log < 0) { perror("ioprobe: log"); return 1; }
    held = open(argv[1], O_RDONLY | O_CLOEXEC);
    if (held < 0) { perror("ioprobe: held"); return 1; }
    snprintf(line, sizeof line, "fd %d pid %d\n", held, (int)getpid());
    logline(log, line);
    for (;;) {
        long long t0 = now_us();
        ssize_t n = pread(held, buf, sizeof buf, 0);
        int e = n < 0 ? errno : 0;
        long long t1 = now_us();
        hex8(buf, n, hx);
        snprintf(line, sizeof line, "%ld held %lld %d %zd %s\n", seq, t1 - t0, e, n, hx);
        logline(log, line);

        t0 = now_us();
        int fd = open(argv[2], O_RDONLY | O_CLOEXEC);
        e = 0;
        n = -1;
        if (fd < 0) {
            e = errno;
        } else {
            n = read(fd, buf, sizeof buf);
            if (n < 0) e = errno;
            close(fd);
        }
        t1 = now_us();
        hex8(buf, n, hx);
        snprintf(line, sizeof line, "%ld reopen %lld %d %zd %s\n", seq, t1 - t0, e, n, hx);
        logline(log, line);

        struct stat st;
        if (stat(argv[2], &st) == 0)
            snprintf(line, sizeof line, "%ld stat 0 %o %lld\n", seq, (unsigned)st.st_mode, (long long)st.st_size);
        else
            snprintf(line, sizeof line, "%ld stat %d 0 0\n", seq, errno);
        logline(log, line);
        seq++;
        usleep(interval * 1000);
    }
}
