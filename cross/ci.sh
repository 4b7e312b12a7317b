#!/usr/bin/env bash
# The cross-build step of CI (the last line of .ci/run):
#   1. the panic strategies as cargo resolves them: the firmware profile aborts, release
#      (stub controller, liblicd) unwinds (issue 16; no build, a second);
#   2. static firmware builds (`--profile firmware`) with the size budgets, all four targets;
#   3. the qemu smoke of all four: aarch64, armv7 and mipsel under qemu-user, x86_64 natively
#      (the build hosts are x86_64);
#   4. the `--tiny` builds (the 2 MiB stretch budget) of aarch64 and armv7, the two targets
#      the stretch is set for, and their smoke, so the small variant keeps working.
# LICD_CI_CROSS_TARGETS overrides the list of 2-3 (e.g. one target), LICD_CI_TINY_TARGETS
# that of 4 ("" skips it). Builds run with --prune: each target's build tree (~300-600 MB) is
# deleted once its binary is in dist/, so the step needs the disk of one tree at a time (CI
# once ran out of disk here). Cold, on the shared 2-core host: see cross/README.md ("What runs
# where") for the time.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=cross/lib.sh
source "$ROOT/cross/lib.sh"

read -r -a targets <<<"${LICD_CI_CROSS_TARGETS:-${ALL_TARGETS[*]}}"
if [ "${targets[*]}" = all ]; then
    targets=("${ALL_TARGETS[@]}")
fi
read -r -a tiny <<<"${LICD_CI_TINY_TARGETS-aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf}"

echo "== panic strategies (firmware aborts, release unwinds) (at ${SECONDS}s)"
ensure_nightly # its cargo answers (--unit-graph); build.sh needs it for armv7/mipsel anyway
check_panic_profiles "${targets[@]}"

echo "== cross builds: ${targets[*]} (at ${SECONDS}s)"
bash cross/build.sh --prune "${targets[@]}"

echo "== smoke (qemu-user; x86_64 native): ${targets[*]} (at ${SECONDS}s)"
bash cross/smoke.sh "${targets[@]}"

if [ "${#tiny[@]}" -gt 0 ]; then
    echo "== tiny builds (--tiny): ${tiny[*]} (at ${SECONDS}s)"
    bash cross/build.sh --tiny --prune "${tiny[@]}"

    echo "== qemu smoke of the tiny builds: ${tiny[*]} (at ${SECONDS}s)"
    LICD_DIST=dist-tiny bash cross/smoke.sh "${tiny[@]}"
fi
echo "== cross step done in ${SECONDS}s"
