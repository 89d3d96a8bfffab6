#!/usr/bin/env python3
"""Helper of benches/session-fleet.sh.

  session-storm.py storm LAB_DIR SECONDS
      Sends, for every device in LAB_DIR/ovoc-devices.json, the "Connection Lost" datagram the
      lab's emulated OVOC sends (`tc lab alarm`: same wording and framing) to the destination of
      the device's newest forwarding rule in LAB_DIR/ovoc-rules.json, evenly spread over SECONDS
      (0: as one burst). Prints a JSON line: sent, seconds.

  session-storm.py wait-captures SESSION_OUT N TIMEOUT
      Waits until SESSION_OUT holds N `session.task` capture lines with status ok.

  session-storm.py analyse SESSION_OUT LAB_OUT LATENCY_MS
      Prints a JSON line with the figures (see session-fleet.sh).
"""
import csv
import json
import socket
import sys
import time
from datetime import datetime

MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()


def ovoc_host(spec):
    """The host of an ovoc column value: `host`, `host:port`, `[v6]:port`, `[v6]` or a bare v6."""
    if spec.startswith("["):
        return spec[1:].split("]", 1)[0]
    if spec.count(":") == 1:
        return spec.rsplit(":", 1)[0]
    return spec

def datagram(ip, name):
    t = time.gmtime()
    return (f"<130>{MONTHS[t.tm_mon - 1]} {t.tm_mday:>2} {t.tm_hour:02}:{t.tm_min:02}:{t.tm_sec:02} "
            f"ovoc-lab : New Alarm - Connection Alarm, Major, Source:Board#1, "
            f"Description:Connection Lost, Device Name:{name}, Tenant:Default, Region:Default, "
            f"IP Address:{ip}, Device Type:tc-lab, Device Serial:lab-{ip}, "
            f"Device Description:tc lab emulated device").encode()


def storm(lab, seconds):
    devices = json.load(open(f"{lab}/ovoc-devices.json"))
    rules = json.load(open(f"{lab}/ovoc-rules.json"))
    best = {}
    for r in rules:
        if r.get("alarm_names") and "acEMSNodeConnectionLostAlarm" not in r["alarm_names"]:
            continue
        for d in r["devices"]:
            if d not in best or r["id"] > best[d]["id"]:
                best[d] = r
    msgs = []
    for did, ip, name in devices:
        r = best.get(did)
        if r is None:
            sys.exit(f"no rule for {ip}")
        msgs.append((datagram(ip, name), (r["dest_ip"], r["dest_port"])))
    # From the OVOC server's address (the inventory's ovoc column, where the agent runs), as the
    # lab's OVOC sends: the session believes alarms from there only.
    with open(f"{lab}/devices.csv") as f:
        row = next(csv.DictReader(f))
    host = ovoc_host(row["ovoc"])
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    t0 = time.monotonic()
    for i, (m, dest) in enumerate(msgs):
        if seconds > 0:
            due = t0 + seconds * i / len(msgs)
            while time.monotonic() < due:
                time.sleep(max(0, min(0.0005, due - time.monotonic())))
        sock.sendto(m, dest)
    print(json.dumps({"sent": len(msgs), "seconds": round(time.monotonic() - t0, 4)}), flush=True)


def lines(path):
    with open(path, errors="replace") as f:
        for line in f:
            try:
                yield json.loads(line)
            except ValueError:
                pass


def ts(s):
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def wait_captures(out, n, timeout):
    end = time.monotonic() + timeout
    while True:
        k = sum(1 for e in lines(out) if e.get("type") == "session.task"
                and e.get("task") == "capture" and e.get("status") == "ok")
        if k >= n:
            return 0
        if time.monotonic() >= end:
            return 1
        time.sleep(0.2)


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, max(0, int(p * len(v) + 0.999999) - 1))] if v else None


def analyse(out, lab_out, latency_ms):
    started = None
    summary = None
    first = {}  # (device, task) -> first ok ts
    for e in lines(out):
        if e.get("type") == "session.started":
            started = ts(e["ts"])
        if e.get("type") == "session.task" and e.get("status") == "ok":
            first.setdefault((e["device"], e["task"]), ts(e["ts"]))
        if e.get("type") == "session.summary":
            summary = e
    devices = sorted({d for d, _ in first})
    caps = [first[(d, "capture")] for d in devices if (d, "capture") in first]
    starts = [first[(d, "cpe_start")] for d in devices if (d, "cpe_start") in first]
    alarms = {d: first[(d, "alarm")] for d in devices if (d, "alarm") in first}
    fetches = [first[(d, "fetch")] for d in devices if (d, "fetch") in first]
    # --collect-ovoc: the OVOC files in, and the verdicts.
    collected = [first[(d, "collect")] for d in devices if (d, "collect") in first]
    verdicts = [first[(d, "analyze")] for d in devices if (d, "analyze") in first]
    puts = {}
    for e in lines(lab_out):
        if (e.get("type") == "lab.request" and e.get("method") == "PUT"
                and e.get("path") == "/api/v1/files/cliScript/incremental"):
            # When the request arrived; a lab older than `received` logs only the answer time,
            # which follows the added latency.
            at = ts(e["received"]) if "received" in e else ts(e["ts"]) - latency_ms / 1000
            puts.setdefault(e["device"], []).append(at)
    react = []
    for d, a in alarms.items():
        after = [p for p in puts.get(d, []) if p >= a - 0.0005]
        if after:
            react.append((min(after) - a) * 1000)
    r = {
        "devices_capturing": len(caps),
        "start_to_all_capturing_s": round(max(caps) - started, 3) if caps and started else None,
        "start_to_all_cpe_started_s": round(max(starts) - started, 3) if starts and started else None,
        "alarms": len(alarms),
        "alarm_span_s": round(max(alarms.values()) - min(alarms.values()), 3) if alarms else None,
        "alarm_to_stop_request_ms": {
            "n": len(react), "p50": round(pct(react, .5), 1), "p99": round(pct(react, .99), 1),
            "min": round(min(react), 1), "max": round(max(react), 1)} if react else None,
        "fetched": len(fetches),
        "first_alarm_to_all_fetched_s": round(max(fetches) - min(alarms.values()), 3)
        if fetches and alarms else None,
        "collected": len(collected),
        "verdicts": len(verdicts),
        "first_alarm_to_all_verdicts_s": round(max(verdicts) - min(alarms.values()), 3)
        if verdicts and alarms else None,
        "last_fetch_to_last_verdict_s": round(max(verdicts) - max(fetches), 3)
        if verdicts and fetches else None,
        "summary": {k: summary.get(k) for k in ("devices", "completed", "aborted", "verdicts", "seconds", "reason")}
        if summary else None,
    }
    print(json.dumps(r), flush=True)


def main():
    a = sys.argv[1:]
    if a and a[0] == "storm":
        return storm(a[1], float(a[2]))
    if a and a[0] == "wait-captures":
        return wait_captures(a[1], int(a[2]), float(a[3]))
    if a and a[0] == "analyse":
        return analyse(a[1], a[2], float(a[3]))
    sys.exit(__doc__)


if __name__ == "__main__":
    sys.exit(main())
