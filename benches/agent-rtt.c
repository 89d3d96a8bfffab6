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
 * With RTT_KEY=FILE (the agent's --key-file), every request is signed as the README's
 * "Authentication" says (a fresh time and nonce each) and every answer's MAC is checked before it
 * counts; an answer that fails the check is not counted (the request may end up lost).
 * Build: cc -O2 -o /tmp/agent-rtt benches/agent-rtt.c -lcrypto
 */
#include <arpa/inet.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
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

static unsigned char key[256];
static int key_len;

static void hex(const unsigned char *b, int n, char *out) {
    for (int i = 0; i < n; i++) sprintf(out + 2 * i, "%02x", b[i]);
}

/* "tc1 <dir>\n<ts>\n<nonce>\n<body>" under the key, as 64 hex digits. */
static void mac(const char *dir, const char *ts, const char *nonce, const char *body, int bl,
                char *out) {
    char head[128];
    int hl = snprintf(head, sizeof head, "tc1 %s\n%s\n%s\n", dir, ts, nonce);
    unsigned char msg[2400], md[32];
    unsigned int ml = 32;
    memcpy(msg, head, hl);
    memcpy(msg + hl, body, bl);
    HMAC(EVP_sha256(), key, key_len, msg, hl + bl, md, &ml);
    hex(md, 32, out);
}

/* Signs `body` into `out`; returns its length. */
static int seal(const char *body, int bl, unsigned long long n, char *out) {
    char ts[32], nonce[17], m[65];
    snprintf(ts, sizeof ts, "%lld", (long long)time(NULL));
    snprintf(nonce, sizeof nonce, "%016llx", n);
    mac("req", ts, nonce, body, bl, m);
    return snprintf(out, 512, "%.*s tc1 %s %s %s", bl, body, ts, nonce, m);
}

/* An answer's trailer checks out (time and nonce are the agent's business to vary). */
static int opened(char *buf, int n) {
    char *sp[4];
    int k = 0;
    for (int i = n - 1; i >= 0 && k < 4; i--)
        if (buf[i] == ' ') sp[k++] = buf + i;
    if (k < 4 || strncmp(sp[3], " tc1 ", 5) != 0) return 0;
    *sp[2] = *sp[1] = *sp[0] = 0;
    char want[65];
    mac("resp", sp[2] + 1, sp[1] + 1, buf, (int)(sp[3] - buf), want);
    return strcmp(want, sp[0] + 1) == 0;
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
    char body[256], req[512];
    int bl = snprintf(body, sizeof body, "%s %s", argv[3], argv[4]), rl = bl;
    memcpy(req, body, bl);
    const char *kf = getenv("RTT_KEY");
    if (kf) {
        FILE *f = fopen(kf, "r");
        if (!f) { perror(kf); return 2; }
        key_len = (int)fread(key, 1, sizeof key, f);
        fclose(f);
        while (key_len > 0 && (key[key_len - 1] == '\n' || key[key_len - 1] == '\r')) key_len--;
    }
    unsigned long long nonce_base = ((unsigned long long)now_ns() << 20) ^ (unsigned long long)getpid();
    long long *first = calloc(count, sizeof *first), *final = calloc(count, sizeof *final);
    int nf = 0, lost = 0;
    char buf[2048];
    for (int i = 0; i < warm + count; i++) {
        if (kf) rl = seal(body, bl, nonce_base + i, req);
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
            if (kf && !opened(buf, (int)n)) continue;
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
