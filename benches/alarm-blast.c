/* Datagram sender for benches/alarm-rate.sh: pre-built OVOC-worded "Connection Lost" syslog
 * datagrams (the wording of `tc lab alarm`, RFC 3164 framing), sent to one UDP destination.
 *
 *   alarm-blast blast IP PORT SECONDS        as fast as possible: UDP GSO (UDP_SEGMENT, 64
 *                                            datagrams per send; the kernel splits them and the
 *                                            receiver gets ordinary single datagrams), sendmmsg
 *                                            of 8 such sends per call
 *   alarm-blast pace  IP PORT SECONDS RATE   RATE datagrams per second, evenly (0.2 ms ticks)
 *   alarm-blast gsopace IP PORT SECONDS RATE RATE datagrams per second in GSO sends of SEG
 *                                            datagrams (rates beyond what `pace` can send)
 *   alarm-blast drain IP PORT SECONDS PID    for SECONDS, in cycles: stop the receiver PID
 *                                            (SIGSTOP), blast for FILL_MS (default 10) so that
 *                                            its receive queue fills, let it go (SIGCONT) and
 *                                            stay idle for IDLE_MS (default 40) while it works
 *                                            the queue off (benches/alarm-ab.sh REGIME=drain)
 *
 * Devices cycle through 10.1<i/100>.1.1<i%100> for i < 1000 so the parser sees varied input
 * (fixed-width addresses: every datagram has the same length, which UDP GSO needs).
 * On exit prints one line: `sent=N seconds=S rate=R errors=E` (stdout), and ` cycles=C` in
 * blast, gsopace and drain.
 * Build: cc -O2 -o /tmp/alarm-blast benches/alarm-blast.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define NDEV 1000
#define BATCH 64

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s blast|pace|gsopace|drain IP PORT SECONDS [RATE|PID]\n", argv[0]);
        return 2;
    }
    int pace = strcmp(argv[1], "pace") == 0;
    int gsopace = strcmp(argv[1], "gsopace") == 0;
    int drain = strcmp(argv[1], "drain") == 0;
    pid_t receiver = drain && argc > 5 ? (pid_t)atol(argv[5]) : 0;
    if (drain && receiver <= 0) { fprintf(stderr, "drain needs the receiver's PID\n"); return 2; }
    double fill = (getenv("FILL_MS") ? atof(getenv("FILL_MS")) : 10) / 1e3;
    double idle = (getenv("IDLE_MS") ? atof(getenv("IDLE_MS")) : 40) / 1e3;
    unsigned long cycles = 0;
    int segs = getenv("SEG") ? atoi(getenv("SEG")) : 64;
    double secs = atof(argv[4]);
    double rate = (pace || gsopace) && argc > 5 ? atof(argv[5]) : 0;
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[3]))};
    if (inet_pton(AF_INET, argv[2], &dst.sin_addr) != 1) return 2;
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    int sz = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
    if (connect(fd, (struct sockaddr *)&dst, sizeof dst) < 0) { perror("connect"); return 1; }

    static char msg[NDEV][512];
    static int len[NDEV];
    for (int i = 0; i < NDEV; i++) {
        char ip[32];
        snprintf(ip, sizeof ip, "10.1%02d.1.1%02d", i / 100, i % 100);
        len[i] = snprintf(msg[i], sizeof msg[i],
            "<130>Nov 27 08:19:41 ovoc-lab : New Alarm - Connection Alarm, Major, "
            "Source:Board#1, Description:Connection Lost, Device Name:lab-msbr-%d, "
            "Tenant:Default, Region:Default, IP Address:%s, Device Type:tc-lab, "
            "Device Serial:lab-%s, Device Description:tc lab emulated device", 1000 + i, ip, ip);
    }
    if (!pace) {
        /* blast and gsopace. GSO: one buffer of SEG equal-length datagrams per message, MM messages per call */
        enum { MAXSEG = 128, MM = 8 };
        int SEG = segs > MAXSEG ? MAXSEG : segs;
        int seg = len[0];
        for (int i = 0; i < NDEV; i++)
            if (len[i] != seg) { fprintf(stderr, "unequal lengths\n"); return 1; }
        int gso = seg;
        if (setsockopt(fd, SOL_UDP, UDP_SEGMENT, &gso, sizeof gso) < 0) { perror("UDP_SEGMENT"); return 1; }
        static char buf[MM][MAXSEG * 512];
        struct mmsghdr m[MM];
        struct iovec v[MM];
        int kk = 0;
        for (int b = 0; b < MM; b++) {
            for (int j = 0; j < SEG; j++) { memcpy(buf[b] + j * seg, msg[kk], seg); kk = (kk + 1) % NDEV; }
            v[b].iov_base = buf[b];
            v[b].iov_len = SEG * seg;
            memset(&m[b].msg_hdr, 0, sizeof m[b].msg_hdr);
            m[b].msg_hdr.msg_iov = &v[b];
            m[b].msg_hdr.msg_iovlen = 1;
        }
        unsigned long sent = 0, errors = 0;
        double t0 = now(), end = t0 + secs, fill_end = 0;
        while (1) {
            double t = now();
            if (t >= end) break;
            if (drain && t >= fill_end) {
                /* a fill has ended (or none has begun): let the receiver work, then stop it */
                if (cycles > 0) {
                    kill(receiver, SIGCONT);
                    struct timespec ts = {(time_t)idle, (long)((idle - (time_t)idle) * 1e9)};
                    nanosleep(&ts, NULL);
                    if (now() >= end) break;
                }
                if (kill(receiver, SIGSTOP) < 0) { perror("kill"); return 1; }
                cycles++;
                fill_end = now() + fill;
                continue;
            }
            int calls = MM;
            if (gsopace) {
                /* whole GSO sends that are due; sleep 0.1 ms while none is */
                double due = (t - t0) * rate - (double)sent;
                calls = due < SEG ? 0 : (int)(due / SEG);
                if (calls > MM) calls = MM;
                if (calls == 0) {
                    struct timespec ts = {0, 100000};
                    nanosleep(&ts, NULL);
                    continue;
                }
            }
            int r = sendmmsg(fd, m, calls, 0);
            if (r < 0) { if (errno != EINTR) errors++; continue; }
            sent += (unsigned long)r * SEG;
        }
        if (drain) {
            /* never leave the receiver stopped */
            kill(receiver, SIGCONT);
            struct timespec ts = {(time_t)idle, (long)((idle - (time_t)idle) * 1e9)};
            nanosleep(&ts, NULL);
        }
        double el = now() - t0;
        printf("sent=%lu seconds=%.6f rate=%.0f errors=%lu cycles=%lu\n", sent, el, sent / el,
               errors, cycles);
        return 0;
    }
    struct mmsghdr mm[BATCH];
    struct iovec iov[BATCH];
    unsigned long sent = 0, errors = 0;
    double t0 = now(), end = t0 + secs;
    int k = 0;
    while (1) {
        double t = now();
        if (t >= end) break;
        unsigned long want;
        if (pace) {
            want = (unsigned long)((t - t0) * rate) - sent;
            if (want == 0) {
                struct timespec ts = {0, 200000}; /* 0.2 ms */
                nanosleep(&ts, NULL);
                continue;
            }
        } else {
            want = BATCH;
        }
        while (want > 0) {
            int n = want > BATCH ? BATCH : (int)want;
            for (int j = 0; j < n; j++) {
                iov[j].iov_base = msg[k];
                iov[j].iov_len = len[k];
                memset(&mm[j].msg_hdr, 0, sizeof mm[j].msg_hdr);
                mm[j].msg_hdr.msg_iov = &iov[j];
                mm[j].msg_hdr.msg_iovlen = 1;
                k = (k + 1) % NDEV;
            }
            int r = sendmmsg(fd, mm, n, 0);
            if (r < 0) {
                if (errno != EINTR) errors++;
                /* ECONNREFUSED (no receiver yet) or ENOBUFS: count, re-check the clock */
                break;
            }
            sent += r;
            want -= r;
        }
    }
    double el = now() - t0;
    printf("sent=%lu seconds=%.6f rate=%.0f errors=%lu\n", sent, el, sent / el, errors);
    return 0;
}
