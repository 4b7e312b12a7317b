#!/usr/bin/env bash
# Static, stripped builds of the agent (`licd`) for firmware images (cargo profile `firmware`:
# release with panic = "abort"), one target at a time, into dist/TARGET/licd; then a size table
# with build times, and the size budgets.
#
#   cross/build.sh [OPTIONS] TARGET... | all
#
# Targets:
#   x86_64-unknown-linux-musl        stable toolchain, musl-gcc
#   aarch64-unknown-linux-musl       stable toolchain, Debian's aarch64-linux-gnu-gcc
#   armv7-unknown-linux-musleabihf   nightly + -Z build-std + cargo-zigbuild (no rustup std here)
#   mipsel-unknown-linux-musl        nightly + -Z build-std + cargo-zigbuild (tier 3)
#
# Options:
#   --no-default-features / --features F1,F2   agent features (see cross/README.md, "Features")
#   --out DIR        where TARGET/licd goes (default: dist)
#   --no-install     do not install anything; fail if something is missing
#   --no-budget      report the budgets but do not fail on them
#   --prune          delete each target's build tree once its binary is in --out (CI: keeps the
#                    peak disk use to one target's tree; the next build of it starts cold)
#   --tiny           the smallest agent: every target through nightly + build-std (std
#                    optimised for size), panics abort without a message (-Cpanic=immediate-abort)
#                    and carry no source locations; budget 2 MiB on aarch64/armv7 (the stretch).
#                    The cost: a panic — a bug, never input — leaves no line in the log.
#                    Default --out dist-tiny, own target dir.
#
# Environment:
#   LICD_CROSS_CACHE        tools kept between runs: the zig venv (default ~/.cache/licd-cross)
#   LICD_CROSS_TARGET_DIR   cargo target dir for these builds (default target/cross, apart from
#                           the host builds so a cross build never waits on their lock)
#   LICD_NIGHTLY            toolchain for the build-std targets (default nightly)
#
# First run on a fresh machine: apt-get update + install, rustup targets, rust-src, a venv with
# zig. Later runs find all of it and go straight to cargo, which rebuilds only what changed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=cross/lib.sh
source "$ROOT/cross/lib.sh"

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
    exit "${1:-0}"
}

features=()
out=
TINY=0
install=1
budget=1
prune=0
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        -h | --help) usage 0 ;;
        --no-default-features) features+=(--no-default-features) ;;
        --features) features+=(--features "${2:?--features needs a value}"); shift ;;
        --features=*) features+=(--features "${1#--features=}") ;;
        --out) out="${2:?--out needs a directory}"; shift ;;
        --no-install) install=0 ;;
        --no-budget) budget=0 ;;
        --tiny) TINY=1 ;;
        --prune) prune=1 ;;
        all) targets+=("${ALL_TARGETS[@]}") ;;
        -*) echo "build.sh: unknown option $1" >&2; usage 2 ;;
        *)
            target_kind "$1" >/dev/null || {
                echo "build.sh: unsupported target $1 (supported: ${ALL_TARGETS[*]})" >&2
                exit 2
            }
            targets+=("$1")
            ;;
    esac
    shift
done
[ "${#targets[@]}" -gt 0 ] || usage 2

if [ "$install" = 1 ]; then
    ensure_tools "${targets[@]}"
else
    check_tools "${targets[@]}"
fi

if [ "$TINY" = 1 ]; then
    out="${out:-dist-tiny}"
    export CARGO_TARGET_DIR="${LICD_CROSS_TARGET_DIR:-$ROOT/target/cross-tiny}"
else
    out="${out:-dist}"
    export CARGO_TARGET_DIR="${LICD_CROSS_TARGET_DIR:-$ROOT/target/cross}"
fi
declare -A secs=()
for t in "${targets[@]}"; do
    echo "== build $t ${features[*]}" >&2
    start=$(date +%s)
    build_licd "$t" "${features[@]}"
    secs[$t]=$(($(date +%s) - start))
    bin="$(licd_path "$t")"
    check_static_stripped "$bin"
    mkdir -p "$out/$t"
    cp "$bin" "$out/$t/licd.tmp" && mv "$out/$t/licd.tmp" "$out/$t/licd"
    if [ "$prune" = 1 ]; then
        echo "== prune $CARGO_TARGET_DIR/$t ($(du -sh "$CARGO_TARGET_DIR/$t" | cut -f1))" >&2
        rm -rf "${CARGO_TARGET_DIR:?}/$t"
    fi
done

# --- Report ---------------------------------------------------------------------------------
over=()
printf '\n%-32s %10s %9s %9s %7s  %s\n' target bytes MiB budget build status
for t in "${targets[@]}"; do
    size=$(stat -c %s "$out/$t/licd")
    limit=$(target_budget "$t")
    status=ok
    if [ "$size" -gt "$limit" ]; then
        status="OVER by $((size - limit)) bytes"
        over+=("$t")
    fi
    printf '%-32s %10d %9s %9s %6ss  %s\n' "$t" "$size" "$(mib "$size")" "$(mib "$limit")" \
        "${secs[$t]}" "$status"
done
if [ "$TINY" = 1 ]; then
    echo "features: ${LICD_TINY_FEATURES:-socket-api,info-logs-only} ${features[*]}, tiny; binaries in $out/TARGET/licd"
else
    echo "features: ${features[*]:-default}; binaries in $out/TARGET/licd"
fi

if [ "${#over[@]}" -gt 0 ]; then
    for t in "${over[@]}"; do
        echo "== $t is over its budget; largest contributors:" >&2
        bash "$ROOT/cross/bloat.sh" "$t" "${features[@]}" >&2 ||
            echo "(bloat.sh failed; see above)" >&2
    done
    if [ "$budget" = 1 ]; then
        echo "build.sh: over budget: ${over[*]}" >&2
        exit 1
    fi
fi
