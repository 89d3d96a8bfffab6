#!/usr/bin/env bash
# Benchmark (issue 5): `tc session` with a fleet of emulated devices.
#
# Starts `tc lab up` with DEVICES devices (REST answers delayed by LATENCY_MS; real sshd for the
# SFTP fetch; --log-requests), one `tc ovoc serve` on the lab's agent address (interface lo, real
# tcpdump per device, forwarding rules in the emulated OVOC), then
#   tc session --devices lab/devices.csv --out OUT --listen 127.0.0.1:PORT --probes none --jobs JOBS
# under /usr/bin/time (its maximum RSS) while sampling VmHWM from /proc/<pid>/status.
# Figures:
#   (a) session.started -> the last `session.task` capture ok (every device capturing on the CPE
#       and at the agent);
#   (b) once all are capturing, benches/session-storm.py sends every device's Connection Lost
#       datagram (the lab OVOC's wording, to the rule's destination = the session's socket) evenly
#       within STORM_SECONDS; per device: the session's `session.task` alarm ts -> the first
#       `lab.request` PUT cliScript for that device after it, at its `received` time (when the
#       request had arrived at the lab, before the added LATENCY_MS); and first alarm -> last
#       fetch ok;
#   (c) the session's peak RSS (VmHWM; /usr/bin/time's maximum RSS as a cross-check);
#   (d) with SESSION_ARGS=--collect-ovoc: first alarm -> every device's verdict, and the last
#       CPE fetch -> the last verdict (the OVOC files come from the lab's sshd by key).
# Prints a Markdown block on stdout (progress on stderr).
# Usage: sudo benches/session-fleet.sh     (from the repository root)
# Environment: TC=PATH (default: the static musl release build, see benches/tc-bin.sh), DEVICES=1000, LATENCY_MS=100,
#   JOBS=32, SUBNET=180 (uses 127.0.SUBNET.. 127.0.SUBNET+DEVICES/250), STORM_SECONDS=1,
#   SESSION_ARGS (extra session options, default none), PORT=21180, LAB_USER=tcbench2s,
#   NO_SNMPD=1 (0: let the lab start snmpd; fails beyond ~100 devices),
#   AGENT_IF=lo: the interface the agent's tcpdumps capture on. With `veth`, the script creates
#   a veth pair tcbench0/tcbench1 and captures on tcbench0 (removed at the end). Why: every
#   packet on an interface runs the filter of every packet socket bound to it, so 1,000 tcpdumps
#   on lo tax every loopback packet of the lab, the session and sshd alike, which a real
#   deployment (agent on the OVOC server, session elsewhere) does not have.
set -euo pipefail
. "$(dirname "$0")/tc-bin.sh"
TC=$(tc_bin)
DEVICES=${DEVICES:-1000}
LATENCY_MS=${LATENCY_MS:-100}
JOBS=${JOBS:-32}
SUBNET=${SUBNET:-180}
STORM_SECONDS=${STORM_SECONDS:-1}
AGENT_IF=${AGENT_IF:-lo}
PORT=${PORT:-21180}
LAB_USER=${LAB_USER:-tcbench2s}
log() { echo "session-fleet.sh: $*" >&2; }
repo=$(cd "$(dirname "$0")/.." && pwd)
PY=$repo/benches/session-storm.py
WORK=$(mktemp -d /tmp/tc-session-fleet.XXXXXX)
chmod 755 "$WORK"
lab_pid= agent_pid= sess_pid=
cleanup() {
    [ -n "$sess_pid" ] && kill -TERM "$sess_pid" 2>/dev/null && wait "$sess_pid" 2>/dev/null
    [ -n "$agent_pid" ] && kill -TERM "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null
    [ -n "$lab_pid" ] && kill -TERM "$lab_pid" 2>/dev/null && wait "$lab_pid" 2>/dev/null
    [ "$AGENT_IF" != tcbench0 ] || ip link del tcbench0 2>/dev/null
    [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "lab: $DEVICES devices, ${LATENCY_MS} ms REST latency (work dir $WORK)"
lab=("$TC" lab up --dir "$WORK/lab" --devices "$DEVICES" --subnet "$SUBNET" --latency-ms "$LATENCY_MS"
    --user "$LAB_USER" --log-requests)
if [ "${NO_SNMPD:-1}" = 1 ]; then
    # As root `tc lab up` starts one snmpd on every device address and waits 10 s for it; on the
    # 2-core test machine snmpd bound only 121 of 500 addresses in 60 s, so the lab cannot start
    # 1,000 devices with it. The session runs with --probes none, so snmpd is not needed: the lab
    # runs in a private mount namespace whose /usr/sbin lacks snmpd (the lab then warns "snmpd
    # not available" and goes on). sshd and everything else stay reachable through symlinks.
    mkdir -p "$WORK/orig-sbin"
    unshare -m --propagation private sh -c '
        o=$1; shift
        mount --bind /usr/sbin "$o" && mount -t tmpfs tmpfs /usr/sbin || exit 1
        for f in "$o"/*; do [ "${f##*/}" = snmpd ] || ln -s "$f" "/usr/sbin/${f##*/}"; done
        exec "$@"' sh "$WORK/orig-sbin" "${lab[@]}" >"$WORK/lab.out" 2>"$WORK/lab.err" &
else
    "${lab[@]}" >"$WORK/lab.out" 2>"$WORK/lab.err" &
fi
lab_pid=$!
for _ in $(seq 1800); do grep -q lab.ready "$WORK/lab.out" 2>/dev/null && break; kill -0 $lab_pid || break; sleep 0.1; done
grep -q lab.ready "$WORK/lab.out" || { cat "$WORK/lab.err" >&2; exit 1; }
set -a; . "$WORK/lab/env"; set +a
if [ "$AGENT_IF" = veth ]; then
    AGENT_IF=tcbench0
    ip link add tcbench0 type veth peer name tcbench1 && ip link set tcbench0 up \
        && ip link set tcbench1 up || { log "cannot create the veth pair"; exit 1; }
fi
# The agent writes where the lab's sshd serves the OVOC side (TC_LAB_AGENT_DIR), so that
# SESSION_ARGS=--collect-ovoc collects from there as from a real OVOC server.
"$TC" ovoc serve --interface "$AGENT_IF" --listen "127.0.$SUBNET.253:20001" --dir "${TC_LAB_AGENT_DIR:-$WORK/agent}" \
    --allow 127.0.0.0/8 --probes none -q >"$WORK/agent.out" 2>"$WORK/agent.err" &
agent_pid=$!
sleep 1
kill -0 "$agent_pid" || { cat "$WORK/agent.err" >&2; exit 1; }

log "session starts"
/usr/bin/time -f 'maxrss_kb=%M' -o "$WORK/time.out" \
    "$TC" session --devices "$WORK/lab/devices.csv" --out "$WORK/out" --listen "127.0.0.1:$PORT" \
    --probes none --jobs "$JOBS" ${SESSION_ARGS:-} -q >"$WORK/session.out" 2>"$WORK/session.err" &
time_pid=$!
sleep 0.2
sess_pid=$(cat /proc/$time_pid/task/*/children | awk '{print $1}')
# CPU seconds (user + system) a process has used so far; the phases below are differences.
cpu() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$1/stat" 2>/dev/null || echo 0; }
hwm=0
sample() { local h; h=$(awk '/^VmHWM/ {print $2}' /proc/$sess_pid/status 2>/dev/null) && [ -n "$h" ] && [ "$h" -gt "$hwm" ] && hwm=$h; return 0; }
ok=1
for _ in $(seq 1200); do  # 120 s
    sample
    python3 "$PY" wait-captures "$WORK/session.out" "$DEVICES" 0 && { ok=0; break; }
    kill -0 "$sess_pid" 2>/dev/null || break
    sleep 0.1
done
[ "$ok" = 0 ] || log "not every device reached capture (see $WORK/session.out)"
cpu_start="lab $(cpu $lab_pid) agent $(cpu $agent_pid) session $(cpu $sess_pid)"
tcpdumps=$(for p in $(cat /proc/$agent_pid/task/*/children); do cat /proc/$p/comm; done | grep -c '^tcpdump$' || true)
agent_rss=$(awk '/^VmRSS/ {print $2}' /proc/$agent_pid/status)
log "all capturing; agent has $tcpdumps tcpdumps; alarm storm over ${STORM_SECONDS}s"
sleep 2
cpu_before="lab $(cpu $lab_pid) agent $(cpu $agent_pid) session $(cpu $sess_pid)"
storm=$(python3 "$PY" storm "$WORK/lab" "$STORM_SECONDS")
log "storm: $storm"
cpu_after_sess=
for _ in $(seq 3000); do  # 300 s
    sample
    c=$(cpu $sess_pid); [ "$c" = 0 ] || cpu_after_sess=$c
    kill -0 "$sess_pid" 2>/dev/null || break
    sleep 0.1
done
sample
wait "$time_pid" || log "session exit code $?"
sess_pid=
cpu_end="lab $(cpu $lab_pid) agent $(cpu $agent_pid) session ${cpu_after_sess:-?}"
res=$(python3 "$PY" analyse "$WORK/session.out" "$WORK/lab.out" "$LATENCY_MS")
log "result: $res"
# The agent's own account of its captures: tcpdump's kernel drops, summed over every capture.
drops=$(python3 - "$WORK/agent.out" <<'PYEOF'
import json, sys
caps = [e for e in map(json.loads, open(sys.argv[1])) if e.get("type") == "ovoc.capture_stopped"]
dropped = sum(e.get("packets_dropped_kernel") or 0 for e in caps)
unknown = sum(1 for e in caps if e.get("packets_dropped_kernel") is None)
incomplete = sum(1 for e in caps if not e.get("complete"))
print(f"captures_stopped={len(caps)} packets_dropped_kernel={dropped} drops_unknown={unknown} incomplete={incomplete}")
PYEOF
)
log "agent: $drops"
cat <<EOT
### tc session: $DEVICES devices, ${LATENCY_MS} ms REST latency, --jobs $JOBS, --probes none ${SESSION_ARGS:-}, agent tcpdumps on $AGENT_IF

- result: \`$res\`
- agent captures: \`$drops\`
- storm sender: \`$storm\`
- agent while all were capturing: $tcpdumps tcpdump processes, agent VmRSS $((agent_rss / 1024)) MiB
- CPU seconds used so far (user + system), when all were capturing: $cpu_start; just before the
  storm: $cpu_before; at the end (session: its last sample): $cpu_end
- session peak RSS: VmHWM sampled every 0.1 s: $((hwm / 1024)) MiB; /usr/bin/time: $(cat "$WORK/time.out" | grep maxrss)
EOT
