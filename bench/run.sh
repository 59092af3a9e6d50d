#!/usr/bin/env bash
# Side-by-side benchmark (issue 6): the same two-host topology built several ways and
# measured in one run:
#
#   VM1 ns --- host1 ns === fabric (veth, fd63:6e73:ffff::/64) === host2 ns --- VM2 ns
#
# Variants: plain veth with kernel routing (the ceiling), kernel VXLAN over IPv6, TAYGA
# (userspace SIIT), Open vSwitch's userspace datapath (VXLAN over IPv6), Canopy (two agent
# loops, crates/node/examples/bench_host.rs), and Canopy VM to internet through an edge
# (crates/node/examples/bench_edge.rs). For each: ping latency (avg/p99), single-stream
# TCP (iperf3), 64-byte UDP packets/s delivered into VM2 (udp_flood).
#
# Safety: every namespace, and every link when created, carries the per-run prefix
# "cb<pid hex>" (veth pairs are created directly between two of the run's namespaces and
# renamed inside them); nothing is linked to the root namespace; OVS and TAYGA run inside
# this run's namespaces with their state under this run's temp dir; only processes this
# script started are stopped, by pid; everything is removed on exit, Ctrl-C and failure.
# Needs root. See bench/README.md.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: sudo bench/run.sh [--seconds N] [--pings N] [--vm-nice N] [--udp-rates LIST]
                         [--variants LIST] [--out FILE] [--no-build]

Builds VM1 -> host1 -> host2 -> VM2 out of network namespaces once per variant and measures
ping latency, single-stream TCP and 64-byte UDP delivered packets/s. Prints one table and
writes it as Markdown to FILE. Needs root; everything it creates carries the prefix
cb<pid hex> and is removed on exit, Ctrl-C and failure. See bench/README.md.

  --seconds N      length of the TCP test and of the UDP test (default 10)
  --pings N        pings for the latency figure, one every 10 ms (default 200)
  --vm-nice N      nice level of the VMs' load generators (iperf3, udp_flood; default 0,
                   everyone equal). 19 lets the hosts' forwarders take a CPU first, as if
                   the VMs had CPUs of their own; only meaningful on an idle machine (other
                   work then starves the generators instead)
  --udp-rates LIST the UDP test once per rate, in thousand packets/s offered (0: as fast
                   as the sender can; default 0). The table gives the most any of them
                   delivered, the path's maximum forwarding rate (RFC 2889), and the
                   details each one. An unpaced sender into a userspace path takes CPU the
                   forwarders need on this small machine: e.g. 0,150,200,250,300
  --variants LIST  comma-separated subset of: veth,vxlan,tayga,ovs,canopy,edge (default:
                   all; "edge" is VM1 to an internet namespace through a Canopy edge)
  --out FILE       Markdown results (default: bench/results.md)
  --no-build       use the bench_host, bench_edge and udp_flood binaries already built (in
                   $BENCH_BIN_DIR, default $CARGO_TARGET_DIR/release/examples)
EOF
}

SECS=10
PINGS=200
VM_NICE=0
UDP_RATES=0
UDP_RATE=0
VARIANTS=veth,vxlan,tayga,ovs,canopy,edge
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$ROOT/bench/results.md
BUILD=1
while (($#)); do
    case $1 in
        --seconds) SECS=${2:?--seconds needs a number}; shift 2 ;;
        --pings) PINGS=${2:?--pings needs a number}; shift 2 ;;
        --vm-nice) VM_NICE=${2:?--vm-nice needs a number}; shift 2 ;;
        --udp-rates) UDP_RATES=${2:?--udp-rates needs a list}; shift 2 ;;
        --variants) VARIANTS=${2:?--variants needs a list}; shift 2 ;;
        --out) OUT=${2:?--out needs a file}; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "run.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
[[ $SECS =~ ^[0-9]+$ && $SECS -ge 1 && $SECS -le 120 ]] ||
    { echo "run.sh: --seconds '$SECS': want 1..120" >&2; exit 2; }
[[ $PINGS =~ ^[0-9]+$ && $PINGS -ge 10 && $PINGS -le 10000 ]] ||
    { echo "run.sh: --pings '$PINGS': want 10..10000" >&2; exit 2; }
[[ $VM_NICE =~ ^[0-9]+$ && $VM_NICE -le 19 ]] ||
    { echo "run.sh: --vm-nice '$VM_NICE': want 0..19" >&2; exit 2; }
[[ -n ${UDP_RATES//,/} ]] || { echo "run.sh: --udp-rates: no rate given" >&2; exit 2; }
for r in ${UDP_RATES//,/ }; do
    [[ $r =~ ^[0-9]+$ && $r -le 10000 ]] ||
        { echo "run.sh: --udp-rates: '$r': want 0..10000 (thousand packets/s; 0: unpaced)" >&2; exit 2; }
done
for v in ${VARIANTS//,/ }; do
    case $v in veth | vxlan | tayga | ovs | canopy | edge) ;;
        *) echo "run.sh: --variants: unknown variant '$v' (veth,vxlan,tayga,ovs,canopy,edge)" >&2; exit 2 ;;
    esac
done
if [[ $(id -u) -ne 0 ]]; then
    echo "run.sh: needs root (network namespaces, TAP/TUN): sudo bench/run.sh" >&2
    exit 2
fi
for tool in ip iperf3 ping jq ss awk ethtool; do
    command -v "$tool" >/dev/null ||
        { echo "run.sh: '$tool' not found (apt-get install iproute2 iperf3 iputils-ping jq ethtool)" >&2; exit 2; }
done

# Per-run prefix: "cb" + pid in hex (at most 9 characters, so that prefix + 6 fits in 15).
P=cb$(printf %x $$)
TMP=$(mktemp -d "/tmp/${P}.XXXXXX")
# "pid comm" of every process started and not yet stopped: $TMP/pids-<variant>, one file
# per variant (each runs in a subshell), emptied once its processes are stopped and reaped.
PIDFILE=$TMP/pids-main
NSFILE=$TMP/netns   # every namespace created
: >"$PIDFILE"
: >"$NSFILE"
VPID=""             # the running variant's subshell

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }

# Stops one process we started, by pid, if it is still the one we started: same name, and
# inside one of this run's namespaces (between fork and exec it may still be "ip", of ip
# netns exec, "env" or "nice").
stop_pid() {
    local pid=$1 comm=$2 now i
    now=$(cat "/proc/$pid/comm" 2>/dev/null) || return 0
    if [[ $now != ip && $now != env && $now != nice ]]; then
        [[ $now == "$comm" ]] || return 0
        [[ $(ip netns identify "$pid" 2>/dev/null) == "$P"* ]] || return 0
    fi
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 30); do
        [[ -e /proc/$pid ]] || return 0
        # Reap it if it is our child (a zombie keeps /proc/<pid>).
        [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) == Z ]] && return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    # The variant's subshell first (our child, not yet reaped), then what it started.
    if [[ -n $VPID ]] && [[ $(cat "/proc/$VPID/comm" 2>/dev/null) == bash ]]; then
        kill -TERM "$VPID" 2>/dev/null || true
    fi
    local f
    for f in "$TMP"/pids-*; do
        [[ -f $f ]] || continue
        tac "$f" | while read -r pid comm; do stop_pid "$pid" "$comm"; done
    done
    if [[ -f $NSFILE ]]; then
        tac "$NSFILE" | while read -r ns; do ip netns del "$ns" 2>/dev/null || true; done
    fi
    wait 2>/dev/null || true
    if ((rc == 0)); then
        rm -rf "$TMP"
    else
        echo "run.sh: failed (exit $rc); logs kept in $TMP" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- building blocks -------------------------------------------------------------------

# nsx NS CMD...: runs CMD in namespace $P$NS.
nsx() {
    local ns=$1
    shift
    ip netns exec "$P$ns" "$@"
}

# mkns NS...: creates namespaces $P$NS with loopback up.
mkns() {
    local ns
    for ns in "$@"; do
        echo "$P$ns" >>"$NSFILE"
        ip netns add "$P$ns"
        ip -n "$P$ns" link set lo up
    done
}

# spawn LOG NS CMD...: starts CMD in namespace NS in the background (output in
# $TMP/LOG.log); its pid is in $SPAWNED and recorded for cleanup.
spawn() {
    local logname=$1 ns=$2
    shift 2
    ip netns exec "$P$ns" "$@" >"$TMP/$logname.log" 2>&1 &
    SPAWNED=$!
    # The name the process will have once exec'd (past "env VAR=...").
    local prog a
    for a in "$@"; do
        [[ $a == env || $a == *=* || $a == nice || $a == -n || $a =~ ^-?[0-9]+$ ]] && continue
        prog=$a
        break
    done
    echo "$SPAWNED $(basename "$prog" | cut -c1-15)" >>"$PIDFILE"
}

# veth NSA NAMEA NSB NAMEB: a veth pair created directly between two lab namespaces (it
# never exists in the root namespace), renamed NAMEA/NAMEB inside them and up.
LINKS=0
veth() {
    LINKS=$((LINKS + 1))
    local a=${P}l$LINKS b=${P}m$LINKS
    ip link add "$a" netns "$P$1" type veth peer name "$b" netns "$P$3"
    ip -n "$P$1" link set dev "$a" name "$2" up
    ip -n "$P$3" link set dev "$b" name "$4" up
}

router() {
    nsx "$1" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
}

# wait_for DESC TRIES CMD...: retries CMD every 0.1 s.
wait_for() {
    local desc=$1 tries=$2 i
    shift 2
    for i in $(seq "$tries"); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    log "timed out waiting for $desc"
    return 1
}

# The underlay between the hosts: fab0 with fd63:6e73:ffff::1 and ::2.
fabric() {
    local t=$1
    veth "${t}h1" fab0 "${t}h2" fab0
    ip -n "$P${t}h1" -6 addr add fd63:6e73:ffff::1/64 dev fab0 nodad
    ip -n "$P${t}h2" -6 addr add fd63:6e73:ffff::2/64 dev fab0 nodad
    router "${t}h1"
    router "${t}h2"
}

# vm_addr NS ADDR/LEN GW MTU: the VM's eth0.
vm_addr() {
    ip -n "$P$1" link set dev eth0 mtu "$4" up
    ip -n "$P$1" addr add "$2" dev eth0
    ip -n "$P$1" route add default via "$3" dev eth0
}

# sched PID: "on-CPU waiting user system": nanoseconds run and runnable-but-waiting for a
# CPU, summed over the process's threads (/proc/<pid>/task/*/schedstat), then clock ticks
# in user and kernel mode (/proc/<pid>/stat).
sched() {
    local s
    s=$(cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{c += $1; w += $2} END {print c + 0, w + 0}')
    echo "$s $(awk '{print $14, $15}' "/proc/$1/stat" 2>/dev/null || echo 0 0)"
}
# cpu_line: "busy total" jiffies of the whole machine (busy = all but idle and iowait).
cpu_line() { awk '/^cpu /{t=0; for(i=2;i<=NF;i++) t+=$i; print t-$5-$6, t}' /proc/stat; }

# A forwarder is given as PID or PID:NS/IF, where IF in namespace $P$NS is the TUN/TAP it
# reads from: such a device counts a packet in tx_packets when its reader takes it (packets
# it drops for a full queue go to tx_dropped), so that counter is the packets read.
fwd_pid() { echo "${1%%:*}"; }
fwd_reads() {
    local spec=$1 where
    [[ $spec == *:* ]] || { echo 0; return; }
    where=${spec#*:}
    ip netns exec "$P${where%%/*}" cat "/sys/class/net/${where#*/}/statistics/tx_packets" \
        2>/dev/null || echo 0
}

# cpu_begin FORWARDERS... / cpu_end: over a measurement, how much of the wall time each
# userspace forwarder ran and waited runnable for a CPU (and, where its reads are counted,
# its CPU time per packet read), and how busy the whole machine was; cpu_end prints e.g.
# "h1 run 40% wait 12% (20% of it in user mode) 2.10 us/pkt, h2 ..., machine 100%".
cpu_begin() {
    CPU_FWD=("$@")
    CPU_S0=()
    CPU_R0=()
    local f
    for f in "${CPU_FWD[@]}"; do
        CPU_S0+=("$(sched "$(fwd_pid "$f")")")
        CPU_R0+=("$(fwd_reads "$f")")
    done
    CPU_M0=$(cpu_line)
    CPU_W0=$(date +%s%N)
}
cpu_end() {
    local w1 m1 i out=""
    w1=$(date +%s%N)
    m1=$(cpu_line)
    for i in "${!CPU_FWD[@]}"; do
        out+=$(awk -v a="${CPU_S0[$i]}" -v b="$(sched "$(fwd_pid "${CPU_FWD[$i]}")")" \
            -v h=$((i + 1)) -v w="$((w1 - CPU_W0))" \
            -v n="$(($(fwd_reads "${CPU_FWD[$i]}") - CPU_R0[i]))" '
            BEGIN {
                split(a, x, " "); split(b, y, " ");
                printf "h%d run %.0f%% wait %.0f%%", h, (y[1]-x[1])/w*100, (y[2]-x[2])/w*100;
                if (y[3]+y[4]-x[3]-x[4] > 0)
                    printf " (%.0f%% of it in user mode)", (y[3]-x[3])/(y[3]+y[4]-x[3]-x[4])*100;
                if (n > 0) printf " %.2f us/pkt", (y[1]-x[1])/n/1000;
                printf ", "
            }')
    done
    out+=$(awk -v m0="$CPU_M0" -v m1="$m1" 'BEGIN{split(m0,a," "); split(m1,b," ");
        printf "machine %.0f%%", (b[1]-a[1])/(b[2]-a[2])*100}')
    echo "$out"
}

# drop_counters T: "where counter" lines: tx/rx drops of every interface in the variant's
# namespaces, the kernel's backlog drops, VM2's UDP receive-buffer errors.
drop_counters() {
    local t=$1 ns
    for ns in v1 h1 h2 v2; do
        # shellcheck disable=SC2016
        nsx "$t$ns" sh -c 'for d in /sys/class/net/*; do n=${d##*/};
            echo "'"$ns"'/$n:tx_dropped $(cat $d/statistics/tx_dropped)";
            echo "'"$ns"'/$n:rx_dropped $(cat $d/statistics/rx_dropped)"; done'
    done
    local backlog=0 _a d _b
    while read -r _a d _b; do backlog=$((backlog + 16#$d)); done </proc/net/softnet_stat
    echo "kernel:backlog_dropped $backlog"
    # shellcheck disable=SC2016
    nsx "${t}v2" awk '/^Udp:/ {if (h) print "v2:udp_rcvbuf_errors", $6; h = 1}' /proc/net/snmp
}

# drops_delta BEFORE AFTER: the counters that grew, "where +n" comma-separated.
drops_delta() {
    awk 'NR == FNR {a[$1] = $2; next} $2 - a[$1] > 0 {printf "%s%s +%d", sep, $1, $2 - a[$1]; sep = ", "}' \
        "$1" "$2"
}

# ---- measurements ----------------------------------------------------------------------

# ping_stats T DST: prints "avg_us p99_us received".
ping_stats() {
    local t=$1 dst=$2 f=$TMP/$1-ping.log
    spawn "$t-ping" "${t}v1" ping -n -c "$PINGS" -i 0.01 -W 1 "$dst"
    wait "$SPAWNED" || true
    awk -F'time=' '/time=/{split($2,a," "); print a[1]*1000}' "$f" | sort -n |
        awk '{v[NR]=$1; s+=$1}
             END{ if (NR == 0) { print "fail fail 0"; exit }
                  i = int((NR*99 + 99) / 100); if (i > NR) i = NR;
                  printf "%.0f %.0f %d\n", s/NR, v[i], NR }'
}

# iperf_server T PORT: a one-shot iperf3 server in VM2, listening when this returns.
iperf_server() {
    spawn "$1-iperf3-s-$2" "${1}v2" nice -n "$VM_NICE" iperf3 -s -1 -p "$2"
    IPERF_S=$SPAWNED
    wait_for "iperf3 server in VM2" 50 \
        bash -c "ip netns exec '$P${1}v2' ss -Hltn 'sport = :$2' | grep -q ."
}

# Waits (bounded) for the one-shot iperf3 server to finish.
iperf_server_done() {
    local i
    for i in $(seq 50); do
        kill -0 "$IPERF_S" 2>/dev/null || break
        sleep 0.1
    done
    stop_pid "$IPERF_S" iperf3
    wait "$IPERF_S" 2>/dev/null || true
}

# tcp_test T DST FWD_PIDS...: prints "Gbit/s retransmits cpu".
tcp_test() {
    local t=$1 dst=$2 f=$TMP/$1-tcp.log gbps retr cpu
    shift 2
    iperf_server "$t" 5201 || { echo "fail - -"; return; }
    cpu_begin "$@"
    spawn "$t-tcp" "${t}v1" nice -n "$VM_NICE" iperf3 -c "$dst" -p 5201 -t "$SECS" --connect-timeout 3000 -J
    wait "$SPAWNED" || true
    cpu=$(cpu_end)
    iperf_server_done
    gbps=$(jq -r '.end.sum_received.bits_per_second / 1e9 | . * 100 | round / 100' "$f" 2>/dev/null) || gbps=fail
    retr=$(jq -r '.end.sum_sent.retransmits' "$f" 2>/dev/null) || retr=-
    echo "${gbps:-fail} ${retr:--} ${cpu// /_}"
}

# udp_test T DST FWD_PIDS...: 64-byte frames (18 bytes of UDP payload: 14 Ethernet + 20
# IPv4 + 8 UDP + 18 + 4 FCS = 64) from udp_flood (sendmmsg; iperf3's sender is slower
# than most of the paths under test). Prints "delivered_kpps sent_kpps app_kpps cpu":
# delivered = what VM2's eth0 received (its rx_packets counter) over the sending time,
# app = what the receiving socket in VM2 counted.
udp_test() {
    local t=$1 dst=$2 rx0 rx1 secs sent app cpu recv_pid
    shift 2
    spawn "$t-udp-recv" "${t}v2" nice -n "$VM_NICE" "$UDP_FLOOD" recv --port 5300 --seconds $((SECS + 5))
    recv_pid=$SPAWNED
    wait_for "udp_flood receiver in VM2" 50 grep -q '^LISTENING' "$TMP/$t-udp-recv.log" ||
        { echo "fail - - -"; return; }
    rx0=$(nsx "${t}v2" cat /sys/class/net/eth0/statistics/rx_packets)
    drop_counters "$t" >"$TMP/$t-drops0"
    cpu_begin "$@"
    spawn "$t-udp-send" "${t}v1" nice -n "$VM_NICE" "$UDP_FLOOD" send --dst "$dst:5300" --seconds "$SECS" \
        --payload 18 --rate-kpps "$UDP_RATE"
    wait "$SPAWNED" || true
    cpu=$(cpu_end)
    wait "$recv_pid" || true
    rx1=$(nsx "${t}v2" cat /sys/class/net/eth0/statistics/rx_packets)
    drop_counters "$t" >"$TMP/$t-drops1"
    drops_delta "$TMP/$t-drops0" "$TMP/$t-drops1" >"$TMP/$t-udp-drops"
    secs=$(sed -n 's/^SENT .*seconds=\([0-9.]*\).*/\1/p' "$TMP/$t-udp-send.log")
    sent=$(sed -n 's/^SENT .*kpps=\([0-9]*\).*/\1/p' "$TMP/$t-udp-send.log")
    app=$(sed -n 's/^RECV .*kpps=\([0-9]*\).*/\1/p' "$TMP/$t-udp-recv.log")
    if [[ -z $secs ]]; then
        echo "fail - - ${cpu// /_}"
        return
    fi
    awk -v a="$rx0" -v b="$rx1" -v s="$secs" -v sent="$sent" -v app="${app:--}" \
        -v c="${cpu// /_}" 'BEGIN{printf "%.0f %s %s %s\n", (b-a)/s/1000, sent, app, c}'
}

# measure T NAME DST FWD_PIDS...: all three measurements; appends a row to results.tsv.
measure() {
    local t=$1 name=$2 dst=$3
    shift 3
    local i ok=0
    for i in $(seq 20); do
        if nsx "${t}v1" ping -n -c 1 -W 1 "$dst" >/dev/null 2>&1; then ok=1; break; fi
        sleep 0.2
    done
    if ((ok == 0)); then
        log "$name: VM1 cannot ping VM2 ($dst); no numbers"
        printf '%s\tfail\tfail\tfail\tfail\tVM1 cannot reach VM2\n' "$name" >>"$TMP/results.tsv"
        return 0
    fi
    local avg p99 n gbps retr tcpcpu kpps sent got udpcpu
    log "$name: ping x$PINGS"
    read -r avg p99 n < <(ping_stats "$t" "$dst")
    log "$name: ping avg ${avg} us, p99 ${p99} us ($n/$PINGS answered)"
    log "$name: TCP ${SECS}s"
    read -r gbps retr tcpcpu < <(tcp_test "$t" "$dst" "$@")
    log "$name: TCP $gbps Gbit/s ($retr retransmits; CPU ${tcpcpu//_/ })"
    local where rate label best=fail best_rate=0 udp_notes=""
    for rate in ${UDP_RATES//,/ }; do
        UDP_RATE=$rate
        if ((rate == 0)); then label="unpaced"; else label="paced at $rate kpps"; fi
        log "$name: UDP 64B ${SECS}s, $label"
        read -r kpps sent got udpcpu < <(udp_test "$t" "$dst" "$@")
        log "$name: UDP delivered $kpps kpps (sent $sent, receiving socket counted $got; CPU ${udpcpu//_/ })"
        where=$(cat "$TMP/$t-udp-drops" 2>/dev/null)
        log "$name: UDP packets lost at: ${where:-nowhere counted}"
        udp_notes+=" UDP $label: delivered $kpps kpps, sent $sent kpps, receiving socket got $got kpps; CPU ${udpcpu//_/ }; lost at: ${where:-nowhere counted}."
        if [[ $kpps =~ ^[0-9]+$ ]] && { [[ $best == fail ]] || ((kpps > best)); }; then
            best=$kpps
            best_rate=$rate
        fi
    done
    # With several rates, the cell says which one delivered the most.
    if [[ $UDP_RATES == *,* && $best != fail ]]; then
        if ((best_rate == 0)); then best="$best (unpaced)"; else best="$best (at $best_rate)"; fi
    fi
    local note="pings $n/$PINGS. TCP: $retr retransmits; CPU ${tcpcpu//_/ }.$udp_notes"
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$gbps" "$best" "$avg" "$p99" "$note" \
        >>"$TMP/results.tsv"
}

# ---- variants --------------------------------------------------------------------------
# Each builds namespaces ${t}v1 ${t}h1 ${t}h2 ${t}v2, measures, and tears them down (the
# trap does it too if anything fails).

# Stops this variant's processes (and reaps them: then their pids are forgotten), and
# deletes its namespaces.
teardown() {
    local t=$1 pid comm ns
    while read -r pid comm; do stop_pid "$pid" "$comm"; done < <(tac "$PIDFILE")
    wait 2>/dev/null || true
    : >"$PIDFILE"
    for ns in v1 h1 h2 v2; do ip netns del "$P$t$ns" 2>/dev/null || true; done
}

# 1. Plain veth, kernel IPv4 routing: VM1 10.0.1.2 -> h1 -> h2 -> VM2 10.0.2.2.
variant_veth() {
    local t=a
    mkns "${t}v1" "${t}h1" "${t}h2" "${t}v2"
    veth "${t}v1" eth0 "${t}h1" vm0
    veth "${t}h2" vm0 "${t}v2" eth0
    fabric "$t"
    ip -n "$P${t}h1" addr add 10.0.1.1/24 dev vm0
    ip -n "$P${t}h2" addr add 10.0.2.1/24 dev vm0
    ip -n "$P${t}h1" addr add 198.18.0.1/30 dev fab0
    ip -n "$P${t}h2" addr add 198.18.0.2/30 dev fab0
    ip -n "$P${t}h1" route add 10.0.2.0/24 via 198.18.0.2
    ip -n "$P${t}h2" route add 10.0.1.0/24 via 198.18.0.1
    vm_addr "${t}v1" 10.0.1.2/24 10.0.1.1 1500
    vm_addr "${t}v2" 10.0.2.2/24 10.0.2.1 1500
    measure "$t" "veth + kernel routing (ceiling)" 10.0.2.2
}

# 2. Kernel VXLAN over the IPv6 fabric, a bridge per host: VM1 10.0.0.2 and VM2 10.0.0.3
# on one L2 segment (MTU 1430: 1500 less 70 bytes of IPv6 + UDP + VXLAN + Ethernet).
variant_vxlan() {
    local t=b h n
    mkns "${t}v1" "${t}h1" "${t}h2" "${t}v2"
    veth "${t}v1" eth0 "${t}h1" vm0
    veth "${t}h2" vm0 "${t}v2" eth0
    fabric "$t"
    for n in 1 2; do
        h=$P${t}h$n
        ip -n "$h" link add vx0 type vxlan id 100 dstport 4789 \
            local "fd63:6e73:ffff::$n" remote "fd63:6e73:ffff::$((3 - n))"
        ip -n "$h" link add br0 type bridge
        ip -n "$h" link set dev vm0 mtu 1430 master br0
        ip -n "$h" link set dev vx0 master br0 up
        ip -n "$h" link set dev br0 up
    done
    vm_addr "${t}v1" 10.0.0.2/24 10.0.0.1 1430
    vm_addr "${t}v2" 10.0.0.3/24 10.0.0.1 1430
    measure "$t" "kernel VXLAN over IPv6" 10.0.0.3
}

# 3. TAYGA: each host translates its VMs' IPv4 to IPv6 (RFC 6052 prefix
# fd63:6e73:64::/96, stateless) and back; the fabric carries IPv6 only.
# VM1 10.0.1.2 -> h1 tayga -> fd63:6e73:64::a00:202 -> h2 tayga -> VM2 10.0.2.2.
variant_tayga() {
    local t=c h n conf
    command -v tayga >/dev/null || { skip "TAYGA" "tayga not installed (apt-get install tayga)"; return 0; }
    mkns "${t}v1" "${t}h1" "${t}h2" "${t}v2"
    veth "${t}v1" eth0 "${t}h1" vm0
    veth "${t}h2" vm0 "${t}v2" eth0
    fabric "$t"
    local pids=()
    for n in 1 2; do
        h=$P${t}h$n
        conf=$TMP/tayga-h$n.conf
        mkdir -p "$TMP/tayga-h$n"
        cat >"$conf" <<EOF
tun-device ${P}n64
ipv4-addr 198.18.1.$n
prefix fd63:6e73:64::/96
data-dir $TMP/tayga-h$n
EOF
        spawn "tayga-h$n" "${t}h$n" tayga -c "$conf" --nodetach
        pids+=("$SPAWNED:${t}h$n/${P}n64")
        wait_for "tayga's TUN in host $n" 50 ip -n "$h" link show dev "${P}n64"
        ip -n "$h" link set dev "${P}n64" up
        ip -n "$h" addr add "10.0.$n.1/24" dev vm0
        # IPv4 for the other host's VMs goes into tayga; IPv6 for ours comes out of it.
        ip -n "$h" route add "10.0.$((3 - n)).0/24" dev "${P}n64"
        ip -n "$h" -6 route add "fd63:6e73:64::a00:${n}00/120" dev "${P}n64"
        ip -n "$h" -6 route add "fd63:6e73:64::a00:$((3 - n))00/120" via "fd63:6e73:ffff::$((3 - n))"
    done
    vm_addr "${t}v1" 10.0.1.2/24 10.0.1.1 1480
    vm_addr "${t}v2" 10.0.2.2/24 10.0.2.1 1480
    measure "$t" "TAYGA (userspace SIIT)" 10.0.2.2 "${pids[@]}"
}

# 4. Open vSwitch, userspace datapath (datapath_type=netdev) on each host: br-int with the
# VM's veth and a VXLAN port over IPv6; br-phy with the fabric veth, carrying the tunnel
# endpoint address (OVS userspace tunnelling). Each host runs its own ovsdb-server and
# ovs-vswitchd inside its namespace, with db/run/log under this run's temp dir.
variant_ovs() {
    local t=d h n d db
    if ! command -v ovs-vswitchd >/dev/null || ! command -v ovsdb-server >/dev/null; then
        skip "Open vSwitch (userspace)" "not installed (apt-get install openvswitch-switch)"
        return 0
    fi
    mkns "${t}v1" "${t}h1" "${t}h2" "${t}v2"
    veth "${t}v1" eth0 "${t}h1" vm0
    veth "${t}h2" vm0 "${t}v2" eth0
    veth "${t}h1" fab0 "${t}h2" fab0
    router "${t}h1"
    router "${t}h2"
    local pids=() bi=${P}i bp=${P}p
    for n in 1 2; do
        h=$P${t}h$n
        d=$TMP/ovs-h$n
        mkdir -p "$d"
        db=unix:$d/db.sock
        ovsdb-tool create "$d/conf.db" /usr/share/openvswitch/vswitch.ovsschema >/dev/null
        spawn "ovsdb-h$n" "${t}h$n" env OVS_RUNDIR="$d" OVS_LOGDIR="$d" OVS_DBDIR="$d" \
            ovsdb-server "$d/conf.db" --remote="punix:$d/db.sock" \
            --unixctl="$d/ovsdb.ctl" --pidfile="$d/ovsdb.pid" --log-file="$d/ovsdb.log"
        wait_for "ovsdb-server in host $n" 50 test -S "$d/db.sock"
        ovs-vsctl --db="$db" --no-wait init
        spawn "vswitchd-h$n" "${t}h$n" env OVS_RUNDIR="$d" OVS_LOGDIR="$d" OVS_DBDIR="$d" \
            ovs-vswitchd "$db" --unixctl="$d/vswitchd.ctl" --pidfile="$d/vswitchd.pid" \
            --log-file="$d/vswitchd.log"
        pids+=("$SPAWNED")
        # OVS reads tunnel routes from its namespace's kernel table, so ovs-vsctl and the
        # address run in the host's namespace.
        nsx "${t}h$n" ovs-vsctl --db="$db" --timeout=20 \
            -- add-br "$bp" -- set bridge "$bp" datapath_type=netdev \
            -- add-port "$bp" fab0 \
            -- add-br "$bi" -- set bridge "$bi" datapath_type=netdev \
            -- add-port "$bi" vm0 \
            -- add-port "$bi" vx0 -- set interface vx0 type=vxlan \
            options:remote_ip="fd63:6e73:ffff::$((3 - n))" \
            options:local_ip="fd63:6e73:ffff::$n" options:key=100
        wait_for "OVS bridge in host $n" 100 ip -n "$h" link show dev "$bp"
        ip -n "$h" -6 addr add "fd63:6e73:ffff::$n/64" dev "$bp" nodad
        ip -n "$h" link set dev "$bp" up
        ip -n "$h" link set dev "$bi" up
        # AF_PACKET ports hand OVS packets with partial checksums unless tx offload is off.
        nsx "${t}h$n" ethtool -K vm0 tx off >/dev/null
    done
    nsx "${t}v1" ethtool -K eth0 tx off >/dev/null
    nsx "${t}v2" ethtool -K eth0 tx off >/dev/null
    # Teach both tunnel endpoints their neighbour (OVS snoops the kernel's ND through br-phy).
    nsx "${t}h1" ping -n -c 3 -i 0.2 -W 1 fd63:6e73:ffff::2 >/dev/null 2>&1 || true
    nsx "${t}h2" ping -n -c 3 -i 0.2 -W 1 fd63:6e73:ffff::1 >/dev/null 2>&1 || true
    vm_addr "${t}v1" 10.0.0.2/24 10.0.0.1 1430
    vm_addr "${t}v2" 10.0.0.3/24 10.0.0.1 1430
    measure "$t" "Open vSwitch userspace (VXLAN/IPv6)" 10.0.0.3 "${pids[@]}"
}

# 5. Canopy: in each host, bench_host runs the agent loop between the substrate TUN and the
# VM's TAP (moved into the VM's namespace as eth0), with static mappings.
variant_canopy() {
    local t=e h n
    mkns "${t}v1" "${t}h1" "${t}h2" "${t}v2"
    fabric "$t"
    local mac=(x 02:00:00:07:00:11 02:00:00:07:00:12)
    local pids=()
    for n in 1 2; do
        h=$P${t}h$n
        local o=$((3 - n))
        spawn "canopy-h$n" "${t}h$n" "$BENCH_HOST" --tun "${P}s$n" --tap "${P}t$n" \
            --locator "fd63:6e73:0:$n::" --vip "10.0.0.$((n + 1))" --mac "${mac[$n]}" \
            --peer "10.0.0.$((o + 1)),fd63:6e73:0:$o::,${mac[$o]}"
        # What it reads most in the VM1 -> VM2 tests: host 1 the VM's TAP, host 2 its TUN.
        if ((n == 1)); then pids+=("$SPAWNED:${t}v1/eth0"); else pids+=("$SPAWNED:${t}h2/${P}s2"); fi
        wait_for "bench_host in host $n" 100 grep -q '^READY' "$TMP/canopy-h$n.log" ||
            { cat "$TMP/canopy-h$n.log" >&2; return 1; }
        ip -n "$h" link set dev "${P}s$n" up
        ip -n "$h" -6 route add "fd63:6e73:0:$n::/72" dev "${P}s$n"
        ip -n "$h" -6 route add "fd63:6e73:0:$o::/72" via "fd63:6e73:ffff::$o"
        ip -n "$h" link set dev "${P}t$n" netns "$P${t}v$n"
        ip -n "$P${t}v$n" link set dev "${P}t$n" name eth0 address "${mac[$n]}"
    done
    vm_addr "${t}v1" 10.0.0.2/24 10.0.0.1 1480
    vm_addr "${t}v2" 10.0.0.3/24 10.0.0.1 1480
    measure "$t" "Canopy (two agent loops)" 10.0.0.3 "${pids[@]}"
    counters "Canopy, host 1's agent" "$(fwd_pid "${pids[0]}")" canopy-h1
    counters "Canopy, host 2's agent" "$(fwd_pid "${pids[1]}")" canopy-h2
}

# counters TITLE PID LOG: stops a Canopy example and keeps the counters it prints.
counters() {
    kill -TERM "$2" 2>/dev/null || true
    wait "$2" 2>/dev/null || true
    {
        echo "- $1: \`$(grep '^READY' "$TMP/$3.log")\`"
        # shellcheck disable=SC2016
        grep '^STATS' "$TMP/$3.log" | sed 's/^/  - `/; s/$/`/'
    } >>"$TMP/notes.md"
}

# 6. Canopy, VM to the internet: host 1's agent sends the VM's traffic to a NAT pool of one
# edge (bench_edge in "host 2", the edge's namespace), which swaps the VM's address for its
# elastic IP 203.0.113.10 and hands it to the internet namespace (198.51.100.10, in the
# place of VM2), and back.
variant_edge() {
    local t=f h1=${P}fh1 h2=${P}fh2
    mkns "${t}v1" "${t}h1" "${t}h2" "${t}v2"
    fabric "$t"
    local vm_mac=02:00:00:07:00:11 pids=()
    spawn canopy-edge-h1 "${t}h1" "$BENCH_HOST" --tun "${P}s1" --tap "${P}t1" \
        --locator fd63:6e73:0:1:: --vip 10.0.0.2 --mac "$vm_mac" \
        --edge fd63:6e73:0:3:: --eip 203.0.113.10
    pids+=("$SPAWNED:${t}v1/eth0")
    spawn canopy-edge-h2 "${t}h2" "$BENCH_EDGE" --substrate-tun "${P}s3" --outside-tun "${P}o3" \
        --locator fd63:6e73:0:3:: --public 203.0.113.10 --vip 10.0.0.2 --host fd63:6e73:0:1::
    pids+=("$SPAWNED:${t}h2/${P}s3")
    wait_for "bench_host in host 1" 100 grep -q '^READY' "$TMP/canopy-edge-h1.log" ||
        { cat "$TMP/canopy-edge-h1.log" >&2; return 1; }
    wait_for "bench_edge" 100 grep -q '^READY' "$TMP/canopy-edge-h2.log" ||
        { cat "$TMP/canopy-edge-h2.log" >&2; return 1; }
    ip -n "$h1" link set dev "${P}s1" up
    ip -n "$h1" -6 route add fd63:6e73:0:1::/72 dev "${P}s1"
    ip -n "$h1" -6 route add fd63:6e73:0:3::/72 via fd63:6e73:ffff::2
    ip -n "$h1" link set dev "${P}t1" netns "$P${t}v1"
    ip -n "$P${t}v1" link set dev "${P}t1" name eth0 address "$vm_mac"
    ip -n "$h2" link set dev "${P}s3" up
    ip -n "$h2" link set dev "${P}o3" up
    ip -n "$h2" -6 route add fd63:6e73:0:3::/72 dev "${P}s3"
    ip -n "$h2" -6 route add fd63:6e73:0:1::/72 via fd63:6e73:ffff::1
    ip -n "$h2" route add 203.0.113.10/32 dev "${P}o3"
    veth "${t}h2" out0 "${t}v2" eth0
    ip -n "$h2" addr add 198.51.100.1/24 dev out0
    vm_addr "${t}v1" 10.0.0.2/24 10.0.0.1 1480
    vm_addr "${t}v2" 198.51.100.10/24 198.51.100.1 1500
    measure "$t" "Canopy VM -> internet (agent + edge, EIP)" 198.51.100.10 "${pids[@]}"
    counters "Internet path, host 1's agent" "$(fwd_pid "${pids[0]}")" canopy-edge-h1
    counters "Internet path, the edge" "$(fwd_pid "${pids[1]}")" canopy-edge-h2
}

skip() {
    log "$1: skipped: $2"
    printf '%s\t-\t-\t-\t-\tskipped: %s\n' "$1" "$2" >>"$TMP/results.tsv"
}

# ---- main ------------------------------------------------------------------------------

: >"$TMP/results.tsv"
: >"$TMP/notes.md"
LOAD_BEFORE=$(uptime)
log "prefix $P, temp dir $TMP, ${SECS}s per test, $PINGS pings; load: $LOAD_BEFORE"
if awk -v n="$(nproc)" '{exit !($1 > n / 4)}' /proc/loadavg; then
    log "warning: the machine is busy (load $(cut -d' ' -f1 /proc/loadavg) on $(nproc) CPUs): the numbers will be low and noisy"
fi

# The Canopy host and the UDP load generator: examples of crates/node.
BIN_DIR=${BENCH_BIN_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/release/examples}
BENCH_HOST=$BIN_DIR/bench_host
BENCH_EDGE=$BIN_DIR/bench_edge
UDP_FLOOD=$BIN_DIR/udp_flood
if ((BUILD)); then
    log "building bench_host, bench_edge and udp_flood (release)"
    (cd "$ROOT" && cargo build --release -q -p canopy-node \
        --example bench_host --example bench_edge --example udp_flood)
fi
for b in "$BENCH_HOST" "$BENCH_EDGE" "$UDP_FLOOD"; do
    [[ -x $b ]] || { echo "run.sh: $b not built (drop --no-build, or set BENCH_BIN_DIR)" >&2; exit 2; }
done

for v in ${VARIANTS//,/ }; do
    log "=== $v"
    rows=$(wc -l <"$TMP/results.tsv")
    # Each variant in its own subshell: a failure costs that variant, not the run.
    tag=$(case $v in veth) echo a ;; vxlan) echo b ;; tayga) echo c ;; ovs) echo d ;;
        canopy) echo e ;; edge) echo f ;; esac)
    (
        PIDFILE=$TMP/pids-$tag
        : >"$PIDFILE"
        # shellcheck disable=SC2064 # the tag is fixed now, on purpose
        trap "teardown $tag" EXIT
        trap 'exit 143' TERM
        "variant_$v"
    ) &
    VPID=$!
    status=0
    wait "$VPID" || status=$?
    VPID=""
    if ((status != 0)); then
        log "$v: failed (logs in $TMP)"
        if (($(wc -l <"$TMP/results.tsv") == rows)); then
            printf '%s\tfail\tfail\tfail\tfail\tsetup failed, see the log\n' "$v" >>"$TMP/results.tsv"
        fi
        KEEP_LOGS=1
    fi
done
LOAD_AFTER=$(uptime)

# ---- report ----------------------------------------------------------------------------

{
    echo "# Side-by-side benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "Command: \`sudo bench/run.sh --seconds $SECS --pings $PINGS --vm-nice $VM_NICE --udp-rates $UDP_RATES --variants $VARIANTS\`."
    echo "Machine: $(nproc) CPUs ($(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)), kernel $(uname -r)."
    echo "Load before: \`${LOAD_BEFORE# }\`; after: \`${LOAD_AFTER# }\`."
    echo
    echo "| Variant | TCP Gbit/s | UDP 64 B kpps delivered | ping avg µs | ping p99 µs |"
    echo "|---|---:|---:|---:|---:|"
    while IFS=$'\t' read -r name gbps kpps avg p99 note; do
        echo "| $name | $gbps | $kpps | $avg | $p99 |"
    done <"$TMP/results.tsv"
    echo
    echo "Details. For each userspace forwarder (h1: host 1's, h2: host 2's), over each test: the"
    echo "share of the wall time it ran and waited runnable for a CPU, how much of its run was in"
    echo "user mode (the rest: system calls and the kernel's forwarding done in its context), and"
    echo "its CPU time per packet read from the TUN/TAP it reads most; then how busy the whole"
    echo "machine was. \"lost at\": the drop counters that grew during the UDP test (tx/rx drops"
    echo "of each namespace/interface, the kernel's backlog, VM2's UDP receive buffer). See"
    echo "bench/README.md, \"Reading the numbers\"."
    echo
    while IFS=$'\t' read -r name gbps kpps avg p99 note; do
        echo "- $name: $note"
    done <"$TMP/results.tsv"
    if [[ -s $TMP/notes.md ]]; then
        echo
        echo "Canopy's counters at exit (whole variant: warm-up and all three tests):"
        echo
        cat "$TMP/notes.md"
    fi
} >"$TMP/report.md"

echo
printf '%-42s %10s %14s %12s %12s\n' "variant" "TCP Gbit/s" "UDP64 kpps" "ping avg us" "ping p99 us"
while IFS=$'\t' read -r name gbps kpps avg p99 note; do
    printf '%-42s %10s %14s %12s %12s\n' "$name" "$gbps" "$kpps" "$avg" "$p99"
done <"$TMP/results.tsv"
echo
mkdir -p "$(dirname "$OUT")"
cp "$TMP/report.md" "$OUT"
echo "Markdown: $OUT"
if [[ ${KEEP_LOGS:-0} == 1 ]]; then
    exit 1
fi
