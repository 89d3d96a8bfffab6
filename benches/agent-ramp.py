#!/usr/bin/env python3
"""Helper of benches/agent-captures.sh: drive one `tc ovoc serve` over its UDP protocol.

  agent-ramp.py ramp AGENT_IP PORT DEVICES_CSV N     REGISTER then CAPTURE each of the first N
                                                     devices, one device after the other
  agent-ramp.py stop AGENT_IP PORT DEVICES_CSV N     STOP each (filename CPE_device_<dev>_<ts>.pcap)
  agent-ramp.py traffic DEVICES_CSV N RATE SECONDS   UDP datagrams (200 bytes, port 9) to the N
                                                     device addresses round-robin, RATE per second

ramp/stop wait for each final answer (code >= 200; 3 s, then one resend) and print one JSON
summary line: counts per final code, the time to the final answer (p50/p99/max ms) and the wall
time. Exit 1 unless every device got 200 OK.
"""
import csv
import json
import socket
import sys
import time


def devices(path, n):
    with open(path, newline="") as f:
        rows = [r["device"] for r in csv.DictReader(f)]
    if len(rows) < n:
        sys.exit(f"only {len(rows)} devices in {path}")
    return rows[:n]


def pct(v, p):
    if not v:
        return None
    v = sorted(v)
    return v[min(len(v) - 1, max(0, int(p * len(v) + 0.999999) - 1))]


def ask(sock, dest, text, verb):
    """Send text, return (final code, seconds) of the answer naming this request."""
    t0 = time.monotonic()
    device = text.split()[1]
    for attempt in range(2):
        sock.sendto(text.encode(), dest)
        deadline = time.monotonic() + 3
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            sock.settimeout(left)
            try:
                data, _ = sock.recvfrom(2048)
            except socket.timeout:
                break
            words = data.decode(errors="replace").split()
            if len(words) >= 4 and words[-2] == device and words[-1] == verb:
                code = int(words[0])
                if code >= 200:
                    return code, time.monotonic() - t0
    return None, time.monotonic() - t0


def drive(agent, port, devs, verbs):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dest = (agent, int(port))
    codes = {}
    times = {v: [] for v in verbs}
    bad = []
    t0 = time.monotonic()
    stamp = time.strftime("%Y-%m-%dT%H.%M.%S.000000", time.gmtime())
    for d in devs:
        for verb in verbs:
            text = f"{verb} {d}" if verb != "STOP" else f"STOP {d} CPE_device_{d}_{stamp}.pcap"
            code, secs = ask(sock, dest, text, verb)
            codes[f"{verb} {code}"] = codes.get(f"{verb} {code}", 0) + 1
            times[verb].append(secs * 1000)
            if code != 200:
                bad.append(f"{verb} {d}: {code}")
    out = {"devices": len(devs), "codes": codes, "wall_s": round(time.monotonic() - t0, 3)}
    for v, t in times.items():
        out[v] = {"p50_ms": round(pct(t, .5), 2), "p99_ms": round(pct(t, .99), 2),
                  "max_ms": round(max(t), 2)}
    if bad:
        out["failed"] = bad[:20]
    print(json.dumps(out), flush=True)
    return 0 if not bad else 1


def traffic(devs, rate, seconds):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    payload = b"x" * 200
    sent = 0
    t0 = time.monotonic()
    i = 0
    while True:
        t = time.monotonic() - t0
        if t >= seconds:
            break
        due = int(t * rate) - sent
        if due <= 0:
            time.sleep(0.001)
            continue
        for _ in range(due):
            try:
                sock.sendto(payload, (devs[i], 9))
            except OSError:
                pass
            i = (i + 1) % len(devs)
        sent += due
    print(json.dumps({"sent": sent, "seconds": round(time.monotonic() - t0, 3)}), flush=True)
    return 0


def main():
    a = sys.argv[1:]
    if a and a[0] == "ramp":
        return drive(a[1], a[2], devices(a[3], int(a[4])), ["REGISTER", "CAPTURE"])
    if a and a[0] == "stop":
        return drive(a[1], a[2], devices(a[3], int(a[4])), ["STOP"])
    if a and a[0] == "traffic":
        return traffic(devices(a[1], int(a[2])), float(a[3]), float(a[4]))
    sys.exit(__doc__)


if __name__ == "__main__":
    sys.exit(main())
