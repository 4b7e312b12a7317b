#!/usr/bin/env bash
# Footprint report of the agent (issue 11): the stripped static `licd` size per target against
# its budget, the idle RSS and wakeups of the static host binary connected to a broker with
# 5 licensed services, and the largest contributors (cross/bloat.sh).
#
#   cross/size-report.sh [--idle-secs N] [--no-bloat] [--bloat-target TARGET]
#
# Sizes come from dist/TARGET/licd when built (cross/build.sh); the host target
# (x86_64-unknown-linux-musl) is built when missing. The idle run starts a private mosquitto on
# a free 127.0.0.1 port and the stub controller (`licd-fleet --controller-only`, built with the
# bench profile) with tenant `fleet`, 5 services and auto-licensing, starts dist's static
# `licd`, waits until `licd check` says all 5 services are licensed, then reads
# /proc/PID/status: VmRSS after N seconds idle (default 60), and the context switches of all the
# agent's threads over those N seconds (voluntary = wakeups from sleep; nonvoluntary =
# preemptions) per minute.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=cross/lib.sh
source "$ROOT/cross/lib.sh"

IDLE_SECS=60
BLOAT=1
BLOAT_TARGET=aarch64-unknown-linux-musl
while [ $# -gt 0 ]; do
    case "$1" in
        --idle-secs) IDLE_SECS="$2"; shift 2 ;;
        --no-bloat) BLOAT=0; shift ;;
        --bloat-target) BLOAT_TARGET="$2"; shift 2 ;;
        *) echo "usage: cross/size-report.sh [--idle-secs N] [--no-bloat] [--bloat-target TARGET]" >&2; exit 2 ;;
    esac
done
HOST=x86_64-unknown-linux-musl
SERVICES=(wifi vpn ids guest-portal mesh)
RSS_BUDGET=$((4 * 1024 * 1024))

echo "== licd size report, $(date -u +%Y-%m-%d) (commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'))"
if [ ! -x "dist/$HOST/licd" ]; then
    echo "dist/$HOST/licd missing: building it (cross/build.sh $HOST)"
    cross/build.sh "$HOST" >&2
fi

echo
printf '%-32s %10s %6s %8s %6s  %s\n' target bytes MiB budget ok built
for t in "${ALL_TARGETS[@]}"; do
    f="dist/$t/licd"
    budget=$(target_budget "$t")
    if [ -f "$f" ]; then
        b=$(stat -c %s "$f")
        ok=yes; [ "$b" -le "$budget" ] || ok=NO
        printf '%-32s %10d %6s %8s %6s  %s\n' "$t" "$b" "$(mib "$b")" "$(mib "$budget")" "$ok" \
            "$(date -u -r "$f" +%Y-%m-%dT%H:%MZ)"
    else
        printf '%-32s %10s %6s %8s %6s  %s\n' "$t" - - "$(mib "$budget")" - "not built: cross/build.sh $t"
    fi
done
for f in dist/aarch64-unknown-linux-musl/licd dist-tiny/aarch64-unknown-linux-musl/licd; do
    [ -f "$f" ] || continue
    b=$(stat -c %s "$f")
    stretch=yes; [ "$b" -le $((2 * 1024 * 1024)) ] || stretch=no
    echo "aarch64 stretch budget 2 MiB met by $f ($b bytes): $stretch"
done
[ -f dist-tiny/aarch64-unknown-linux-musl/licd ] ||
    echo "(the tiny build meets the stretch: cross/build.sh --tiny aarch64-unknown-linux-musl)"

# ---- idle RSS and wakeups -------------------------------------------------------------
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || {
    echo "size-report: mosquitto not installed (apt-get install mosquitto); no idle figures" >&2
    exit 1
}
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
echo
echo "building the stub controller (licd-fleet, bench profile)..." >&2
cargo build -q --profile bench -p licd-tests --bin licd-fleet >&2
FLEET="$ROOT/target/release/licd-fleet"

work=$(mktemp -d "${TMPDIR:-/tmp}/licd-size-report.XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$work/mosquitto.conf" <<EOF
user root
listener $port 127.0.0.1
allow_anonymous true
persistence false
log_dest file $work/mosquitto.log
EOF
"$MOSQUITTO" -c "$work/mosquitto.conf" >/dev/null 2>&1 &
pids+=($!)

# Waits up to $2 seconds for command $1 to succeed (polling, no fixed sleep).
wait_until() {
    local what="$1" secs="$2" end=$((SECONDS + $2))
    until eval "$what" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$end" ] || { echo "size-report: timed out after ${secs}s: $what" >&2; return 1; }
        sleep 0.1
    done
}
wait_until "bash -c 'exec 3<>/dev/tcp/127.0.0.1/$port'" 10

"$FLEET" --controller-only "mqtt://127.0.0.1:$port" --devices 10 >"$work/ctl.out" 2>"$work/ctl.err" &
pids+=($!)
wait_until "grep -q '^root ' '$work/ctl.out'" 30
root=$(awk '/^root /{print $2}' "$work/ctl.out")

list=$(printf '"%s", ' "${SERVICES[@]}")
cat >"$work/licd.toml" <<EOF
tenant = "fleet"
services = [${list%, }]
state_dir = "$work/state"
roots = ["$root"]

[broker]
url = "mqtt://127.0.0.1:$port"
allow_insecure = true

[api]
socket = "$work/licd.sock"

[log]
level = "info"

[identity]
device_id = "size-probe-1"
model = "AP-FLEET"
serial = "SN-PROBE"
product_class = "wireless"
EOF
LICD="$ROOT/dist/$HOST/licd"
"$LICD" --config "$work/licd.toml" run 2>"$work/licd.log" &
agent=$!
pids+=("$agent")
all_licensed() {
    local s
    for s in "${SERVICES[@]}"; do "$LICD" --config "$work/licd.toml" check "$s" >/dev/null || return 1; done
}
wait_until all_licensed 30

ctxt() { # voluntary nonvoluntary, summed over the agent's threads
    cat /proc/"$agent"/task/*/status | awk '/^voluntary_ctxt_switches/{v+=$2} /^nonvoluntary_ctxt_switches/{n+=$2} END{print v+0, n+0}'
}
read -r v0 n0 < <(ctxt)
echo "agent licensed (5 services); idle for ${IDLE_SECS}s..." >&2
sleep "$IDLE_SECS" # the measurement window itself
read -r v1 n1 < <(ctxt)
kill -0 "$agent" 2>/dev/null || { echo "size-report: the agent exited; log:" >&2; cat "$work/licd.log" >&2; exit 1; }
rss_kb=$(awk '/^VmRSS/{print $2}' /proc/"$agent"/status)
hwm_kb=$(awk '/^VmHWM/{print $2}' /proc/"$agent"/status)
threads=$(awk '/^Threads/{print $2}' /proc/"$agent"/status)
rss=$((rss_kb * 1024))
per_min() { awk -v d="$1" -v s="$IDLE_SECS" 'BEGIN { printf "%.1f", d * 60 / s }'; }
ok=yes; [ "$rss" -le "$RSS_BUDGET" ] || ok=NO
all_licensed || { echo "size-report: a service stopped being licensed during the idle window" >&2; exit 1; }

echo
echo "idle agent: dist/$HOST/licd, connected to mosquitto + stub, 5 services licensed, after ${IDLE_SECS}s"
printf '%-34s %12s\n' figure value
printf '%-34s %12s\n' "VmRSS (KiB)" "$rss_kb"
printf '%-34s %12s\n' "VmRSS (MiB), budget 4 MiB" "$(mib "$rss") ($ok)"
printf '%-34s %12s\n' "VmHWM peak (KiB)" "$hwm_kb"
printf '%-34s %12s\n' "threads" "$threads"
printf '%-34s %12s\n' "voluntary switches / min" "$(per_min $((v1 - v0)))"
printf '%-34s %12s\n' "nonvoluntary switches / min" "$(per_min $((n1 - n0)))"

if [ "$BLOAT" = 1 ]; then
    echo
    echo "== largest contributors ($BLOAT_TARGET, cross/bloat.sh)"
    cross/bloat.sh "$BLOAT_TARGET" 2>/dev/null
fi
