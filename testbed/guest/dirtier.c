/* The test guest's init (PID 1): dirties its working set at a chosen rate and checks, once a second,
 * that every page still holds what it last wrote. `bad > 0` after a migration means lost dirty pages.
 * Parameters come from the kernel command line (unknown key=value words become environment variables):
 * ws_mb (working set, MiB), rate_mb (MiB/s dirtied). Heartbeats go to the serial console:
 *   hb <n> t=<guest s> dirtied=<MiB/s> total=<MiB> bad=<pages>
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static long env(const char *name, long fallback) {
    const char *v = getenv(name);
    return v ? atol(v) : fallback;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(void) {
    long ws_mb = env("ws_mb", 128), rate_mb = env("rate_mb", 10);
    long pages = ws_mb * 256;
    unsigned char *buf = mmap(NULL, pages * 4096, PROT_READ | PROT_WRITE,
                              MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (buf == MAP_FAILED) { printf("mmap failed\n"); for (;;) pause(); }
    memset(buf, 1, pages * 4096);
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("ready ws_mb=%ld rate_mb=%ld\n", ws_mb, rate_mb);

    long pos = 0;
    unsigned char val = 2;
    double carry = 0, start = now(), next = start, last_report = start;
    unsigned long long total_pages = 0, beats = 0, pages_since = 0;
    for (;;) {
        carry += rate_mb * 256 / 100.0;
        long n = (long)carry;
        carry -= n;
        total_pages += n;
        pages_since += n;
        while (n--) {
            buf[pos * 4096 + val] = val;
            if (++pos == pages) { pos = 0; val++; if (val < 2) val = 2; }
        }
        double t = now();
        if (t - last_report >= 1.0) {
            unsigned long bad = 0;
            for (long p = 0; p < pages; p++) {
                /* pages before pos were written in this sweep with val, the rest in the previous one */
                unsigned char e = p < pos ? val : (unsigned char)(val == 2 ? (total_pages > (unsigned long long)pages ? 255 : 1) : val - 1);
                if (e == 1) { if (buf[p * 4096 + 2] != 1) bad++; continue; }
                if (buf[p * 4096 + e] != e) bad++;
            }
            printf("hb %llu t=%.1f dirtied=%.1fMiB/s total=%lluMiB bad=%lu\n", ++beats, t - start,
                   pages_since / 256.0 / (t - last_report), total_pages / 256, bad);
            pages_since = 0;
            last_report = t;
        }
        next += 0.01;
        t = now();
        if (t - next > 1.0) next = t;  /* resync after a long stall (migration downtime, throttling) */
        else if (next > t) usleep((useconds_t)((next - t) * 1e6));
    }
}
