#!/usr/bin/env bash
# Benchmark (issue 14): `tc analyze` on a pair of 1 GB captures, against `capinfos` and
# `tshark -r FILE -q -z io,stat,0` reading the same files, each pinned to one core.
#
# `tc lab captures` generates the pair (OVOC side and CPE side, NAT, a 1.5 s clock offset
# drifting 30 ppm, OVOC-to-CPE loss for a tenth of the run, the CPE's LAN chatter on top); one
# untimed pass of every contender warms the page cache, then RUNS rounds time each contender in
# turn (the order rotates per round) with /usr/bin/time. capinfos gets both files in one run,
# twice: as it runs by default (every info, which includes SHA256, RIPEMD160 and SHA1 hashes of
# each file: work tc does not do) and with every info but the hashes (-H left out: capinfos has
# no flag that turns hashing off, only the list of infos without it); tshark is run once per
# file and its two runs are added up. Reported per contender: median wall
# seconds with min and max, packets per second (packets of both files / wall), peak RSS; and the
# ratios of each round (same round, same load), with their median.
#
# Goals: tc analyze faster than capinfos on the same files, >= 2 million packets/s on one core,
# peak RSS < 100 MB.
#
# Prints a Markdown report on stdout (progress on stderr).
# Needs: capinfos and tshark (apt-get install tshark), /usr/bin/time (apt-get install time),
# taskset (util-linux), about 2.2 GB of free disk in DIR.
#
# Usage: benches/analyze.sh             (from the repository root)
# Environment (all optional):
#   TC=PATH     tc binary (default: the static musl release build, see benches/tc-bin.sh)
#   RUNS=5      timed rounds
#   SECONDS_SIM=1500 RATE=400   the generated traffic (about 1 GB per side at these values)
#   DIR=PATH    where the captures go (default: a new directory under /var/tmp, removed at exit)
#   KEEP=1      keep DIR
#   CPU=1       the core every contender is pinned to
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-5}
SECONDS_SIM=${SECONDS_SIM:-1500}
RATE=${RATE:-400}
CPU=${CPU:-1}

for t in capinfos tshark taskset; do
  command -v "$t" >/dev/null || { echo "analyze.sh: needs $t" >&2; exit 2; }
done
[[ -x /usr/bin/time ]] || { echo "analyze.sh: needs /usr/bin/time (apt-get install time)" >&2; exit 2; }

. benches/tc-bin.sh  # the cd above made the repository root the working directory
TC=$(tc_bin)

if [[ -z "${DIR:-}" ]]; then
  DIR=$(mktemp -d /var/tmp/tc-analyze-bench.XXXXXX)
  [[ -n "${KEEP:-}" ]] || trap 'rm -rf "$DIR"' EXIT
fi

echo "generating the pair in $DIR" >&2
gen_start=$SECONDS
"$TC" lab captures --dir "$DIR" --seconds "$SECONDS_SIM" --rate "$RATE" --nat --offset 1.5s \
  --drift-ppm 30 --drop ovoc_to_cpe --drop-from $((SECONDS_SIM * 6 / 10)) \
  --drop-until $((SECONDS_SIM * 7 / 10)) --cpe-start 3
echo "generated in $((SECONDS - gen_start)) s" >&2
cpe=$(ls "$DIR"/CPE_device_*.pcap)
ovoc=$(ls "$DIR"/OVOC_device_*-0.pcap)
bytes_cpe=$(stat -c %s "$cpe")
bytes_ovoc=$(stat -c %s "$ovoc")
packets=$(capinfos -c -M "$cpe" "$ovoc" | awk -F: '/Number of packets/ { s += $2 } END { print s }')

# One command under /usr/bin/time, pinned to the core: prints "wall maxrss_kib user sys".
timed() {
  /usr/bin/time -o "$DIR/time.txt" -f '%e %M %U %S' taskset -c "$CPU" "$@" >/dev/null 2>&1
  cat "$DIR/time.txt"
}

# One contender once: prints "wall maxrss_kib user sys".
measure() {
  case "$1" in
    tc)
      /usr/bin/time -o "$DIR/time.txt" -f '%e %M %U %S' taskset -c "$CPU" "$TC" analyze \
        --cpe "$cpe" --ovoc "$ovoc" >"$DIR/analyze.jsonl"
      cat "$DIR/time.txt" ;;
    capinfos) timed capinfos "$cpe" "$ovoc" ;;
    # Every info of -A but -H (the hashes): still reads every packet for counts, sizes, times.
    capinfos_nohash) timed capinfos -t -E -I -F -k -c -s -d -l -u -a -e -o -y -i -z -x -n -D "$cpe" "$ovoc" ;;
    tshark)
      local a b
      a=$(timed tshark -r "$cpe" -q -z io,stat,0)
      b=$(timed tshark -r "$ovoc" -q -z io,stat,0)
      awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " ");
        printf "%.2f %d %.2f %.2f\n", x[1] + y[1], (x[2] > y[2] ? x[2] : y[2]), x[3] + y[3], x[4] + y[4] }' ;;
  esac
}

echo "warming the page cache (one untimed run of each)" >&2
for c in tc capinfos capinfos_nohash tshark; do measure "$c" >/dev/null; done

declare -A wall rss
rows=()
contenders=(tc capinfos capinfos_nohash tshark)
n=${#contenders[@]}
for ((r = 1; r <= RUNS; r++)); do
  load=$(cut -d' ' -f1 /proc/loadavg)
  order=("${contenders[@]:$(((r - 1) % n))}" "${contenders[@]:0:$(((r - 1) % n))}")
  declare -A this=()
  for c in "${order[@]}"; do
    read -r w m u s <<<"$(measure "$c")"
    this[$c]=$w
    wall[$c]+="$w "
    rss[$c]+="$m "
    echo "round $r $c: $w s, $m KiB" >&2
  done
  rows+=("$(awk -v r="$r" -v l="$load" -v o="${order[*]}" -v t="${this[tc]}" -v c="${this[capinfos]}" \
    -v h="${this[capinfos_nohash]}" -v s="${this[tshark]}" \
    'BEGIN { printf "| %d | %s | %s | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.1f |", r, l, o, t, c, h, s, c / t, h / t, s / t }')")
done

stats() { # values -> "median min max"
  tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END {
    m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%s %s %s", m, v[1], v[NR] }'
}

tc_version=$("$TC" --version)
echo "Run $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, $tc_version ($TC), $(capinfos --version | head -1 | cut -d' ' -f1-3), $(tshark --version | head -1 | cut -d' ' -f1-3)."
echo "Files: CPE $bytes_cpe bytes, OVOC $bytes_ovoc bytes, $packets packets together; each contender pinned to core $CPU (taskset); $RUNS rounds after one warm-up each."
echo
echo "| round | load | order | tc s | capinfos s | capinfos without hashes s | tshark s | capinfos / tc | capinfos without hashes / tc | tshark / tc |"
echo "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"
printf '%s\n' "${rows[@]}"
echo
echo "| contender | median s | min s | max s | packets/s (median) | peak RSS MiB (max) |"
echo "|---|---:|---:|---:|---:|---:|"
for c in tc capinfos capinfos_nohash tshark; do
  read -r med lo hi <<<"$(stats "${wall[$c]}")"
  read -r _ _ rmax <<<"$(stats "${rss[$c]}")"
  awk -v c="$c" -v m="$med" -v lo="$lo" -v hi="$hi" -v p="$packets" -v r="$rmax" \
    'BEGIN { printf "| %s | %.2f | %.2f | %.2f | %d | %.1f |\n", c, m, lo, hi, p / m, r / 1024 }'
done
ratios_c=$(printf '%s\n' "${rows[@]}" | awk -F'|' '{ print $9 }' | tr '\n' ' ')
ratios_h=$(printf '%s\n' "${rows[@]}" | awk -F'|' '{ print $10 }' | tr '\n' ' ')
ratios_s=$(printf '%s\n' "${rows[@]}" | awk -F'|' '{ print $11 }' | tr '\n' ' ')
read -r rc_med rc_lo rc_hi <<<"$(stats "$ratios_c")"
read -r rh_med rh_lo rh_hi <<<"$(stats "$ratios_h")"
read -r rs_med rs_lo rs_hi <<<"$(stats "$ratios_s")"
echo
echo "Per-round ratios (same round): capinfos / tc median $rc_med ($rc_lo to $rc_hi); capinfos without hashes / tc median $rh_med ($rh_lo to $rh_hi); tshark / tc median $rs_med ($rs_lo to $rs_hi)."
verdict=$(grep '"analyze.verdict"' "$DIR/analyze.jsonl" | sed 's/.*"verdict":"\([a-z_]*\)".*/\1/')
echo "tc analyze's verdict on the pair: $verdict."
