# Shell functions for benches/alarm-rate.sh and benches/alarm-ab.sh (sourced, not run).

# build_blast DIR: compiles benches/alarm-blast.c into DIR and prints its path.
build_blast() {
    cc -O2 -o "$1/alarm-blast" "$(dirname "${BASH_SOURCE[0]}")/alarm-blast.c"
    echo "$1/alarm-blast"
}

# run_ns PID: the process's CPU time so far, in nanoseconds.
run_ns() { awk '{print $1}' "/proc/$1/schedstat"; }

# udp_drops: the kernel's drop count for the IPv4 UDP socket bound to $PORT.
udp_drops() { awk -v p=":$(printf '%04X' "$PORT")" '$2 ~ p"$" {print $NF; exit}' /proc/net/udp; }

# median: of the numbers on stdin, one per line (the mean of the middle two for an even count).
median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
