/* Round-trip latency of `tc ovoc serve` requests, for benches/agent-latency.sh.
 *
 *   agent-rtt IP PORT VERB DEVICE COUNT [WARMUP]
 *
 * Sends `VERB DEVICE` COUNT times, strictly one after the other, from one connected UDP socket;
 * for each request it takes the time (CLOCK_MONOTONIC) from just before send() to the arrival
 * of the first response datagram ("first") and of the final one ("final": a code >= 200; for
 * REGISTER the first response is final). WARMUP requests go first and are not counted.
 * A request without its final answer within 2 s counts as lost.
 * Prints: `verb=V n=N lost=L first_p50_us=.. first_p90_us=.. first_p99_us=.. first_max_us=..
 *          final_p50_us=.. final_p99_us=.. final_max_us=..`
 * Build: cc -O2 -o /tmp/agent-rtt benches/agent-rtt.c
 */
#include <arpa/inet.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}
static int cmp(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return x < y ? -1 : x > y;
}
static double pct(long long *v, int n, double p) {
    if (n == 0) return -1;
    int i = (int)(p * n + 0.999999) - 1;
    if (i < 0) i = 0;
    if (i >= n) i = n - 1;
    return v[i] / 1000.0;
}

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: %s IP PORT VERB DEVICE COUNT [WARMUP]\n", argv[0]);
        return 2;
    }
    int count = atoi(argv[5]), warm = argc > 6 ? atoi(argv[6]) : 100;
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    if (inet_pton(AF_INET, argv[1], &dst.sin_addr) != 1) return 2;
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (connect(fd, (struct sockaddr *)&dst, sizeof dst) < 0) { perror("connect"); return 1; }
    char req[256];
    int rl = snprintf(req, sizeof req, "%s %s", argv[3], argv[4]);
    long long *first = calloc(count, sizeof *first), *final = calloc(count, sizeof *final);
    int nf = 0, lost = 0;
    char buf[2048];
    for (int i = 0; i < warm + count; i++) {
        long long t0 = now_ns(), t1 = 0, t2 = 0;
        if (send(fd, req, rl, 0) != rl) { perror("send"); return 1; }
        while (!t2) {
            struct pollfd p = {fd, POLLIN, 0};
            long long left = 2000 - (now_ns() - t0) / 1000000;
            if (left <= 0 || poll(&p, 1, (int)left) <= 0) break;
            ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
            if (n <= 0) continue;
            long long t = now_ns();
            buf[n] = 0;
            if (!t1) t1 = t;
            if (atoi(buf) >= 200) t2 = t;
        }
        if (i < warm) continue;
        if (!t2) { lost++; continue; }
        first[nf] = t1 - t0;
        final[nf] = t2 - t0;
        nf++;
    }
    qsort(first, nf, sizeof *first, cmp);
    qsort(final, nf, sizeof *final, cmp);
    printf("verb=%s n=%d lost=%d first_p50_us=%.1f first_p90_us=%.1f first_p99_us=%.1f "
           "first_max_us=%.1f final_p50_us=%.1f final_p99_us=%.1f final_max_us=%.1f\n",
           argv[3], nf, lost, pct(first, nf, .5), pct(first, nf, .9), pct(first, nf, .99),
           pct(first, nf, 1), pct(final, nf, .5), pct(final, nf, .99), pct(final, nf, 1));
    return 0;
}
