#!/usr/bin/env bash
# The cross-build step of CI (the last line of .ci/run): static release builds with the size
# budgets, then the qemu smoke test, for the targets CI can afford. By default aarch64 and
# armv7 (the two issue 7 requires under qemu; ~1.5 + ~4.5 min cold, ~1 min smoke); x86_64 and
# mipsel run locally with `cross/build.sh all` (cross/README.md). LICD_CI_CROSS_TARGETS
# overrides the list, e.g. "all" or one target. Then the same targets again as `--tiny` builds
# (the 2 MiB stretch budget; ~2 min) and their smoke, so the small variant keeps working.
# Builds run with --prune: each target's build tree (~300-600 MB) is deleted once its binary is
# in dist/, so the step needs the disk of one tree at a time (CI once ran out of disk here).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

read -r -a targets <<<"${LICD_CI_CROSS_TARGETS:-aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf}"
if [ "${targets[*]}" = all ]; then
    read -r -a targets <<<"x86_64-unknown-linux-musl aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf mipsel-unknown-linux-musl"
fi

echo "== cross builds: ${targets[*]}"
bash cross/build.sh --prune "${targets[@]}"

echo "== qemu smoke: ${targets[*]}"
bash cross/smoke.sh "${targets[@]}"

echo "== tiny builds (--tiny): ${targets[*]}"
bash cross/build.sh --tiny --prune "${targets[@]}"

echo "== qemu smoke of the tiny builds: ${targets[*]}"
LICD_DIST=dist-tiny bash cross/smoke.sh "${targets[@]}"
