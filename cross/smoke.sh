#!/usr/bin/env bash
# Proof that the cross-built agent runs on its target: each $LICD_DIST/TARGET/licd (default
# dist/; dist-tiny/ for `build.sh --tiny`) runs under qemu-user (called directly; binfmt_misc
# is not mounted on the build hosts; x86_64 runs natively there) as the `licd` of the
# end-to-end tests in tests/, against a real mosquitto and the test controller on 127.0.0.1.
# Passing means the agent resolved its identity, reported, received and verified a signed
# grant, and answered `licd check` as licensed, over plain MQTT and over TLS; and, with no
# network at all, imported a grant file made on the host by `licd-stub offline grant` (issue
# 18), through its daemon and with the daemon stopped, and answered `licd check` as licensed.
#
#   cross/smoke.sh [TARGET...]     default: all four (cross/lib.sh ALL_TARGETS)
#
# Build the binaries first: cross/build.sh TARGET... (ci.sh does both).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=cross/lib.sh
source "$ROOT/cross/lib.sh"

# The scenarios run under emulation: first boot over plain MQTT (report → grant → licensed,
# `licd check` through the daemon and a not-granted service refused), and the same over TLS
# (ring's assembly for the target, certificate checks).
SCENARIOS=(first_boot_reports_gets_a_grant tls_with_the_generated_ca_licenses_the_device)
# Licensing by file with no network (tests/tests/offline_stub.rs): `licd request` under
# emulation, the grant file from the real `licd-stub offline grant` on the host, `licd import`
# and `licd check` under emulation.
OFFLINE_SCENARIOS=(a_device_with_no_network_is_licensed_by_a_grant_file_from_the_stub_cli)

DIST="${LICD_DIST:-dist}"
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=("${ALL_TARGETS[@]}")

need=(mosquitto)
for t in "${targets[@]}"; do
    target_kind "$t" >/dev/null || { echo "smoke.sh: unsupported target $t" >&2; exit 2; }
    [ -x "$DIST/$t/licd" ] || {
        echo "smoke.sh: $DIST/$t/licd is missing; run cross/build.sh $t first" >&2
        exit 1
    }
    [ -z "$(target_qemu "$t")" ] || need+=(qemu-user-static)
done
apt_install "${need[@]}"
# The package's own broker service is not what the tests use (they start their own).
if [ -d /run/systemd/system ]; then systemctl disable --now mosquitto >/dev/null 2>&1 || true; fi

wrappers="$(mktemp -d)"
trap 'rm -rf "$wrappers"' EXIT
declare -A result=() secs=()
failed=0
for t in "${targets[@]}"; do
    qemu="$(target_qemu "$t")"
    wrapper="$wrappers/licd-$t"
    # exec: the test harness's SIGTERM/SIGKILL reach qemu, which passes them to the agent.
    # Each call is counted, so a harness that quietly ran some other licd fails the smoke.
    printf '#!/bin/sh\necho "$*" >>"%s"\nexec %s "%s" "$@"\n' \
        "$wrappers/$t.calls" "$qemu" "$ROOT/$DIST/$t/licd" >"$wrapper"
    chmod +x "$wrapper"
    echo "== smoke $t (${qemu:-native}): $("$wrapper" --version)" >&2
    start=$(date +%s)
    # --workspace: the same feature set as the project's test run, so CI reuses its build.
    # Test filters are substrings, so each name matches in its own file only; each file's
    # result line must count its own scenarios.
    if LICD_BIN="$wrapper" cargo test --workspace --locked --test agent_session \
        --test offline_stub -- "${SCENARIOS[@]}" "${OFFLINE_SCENARIOS[@]}" \
        --test-threads=1 --nocapture 2>&1 | tee "$wrappers/$t.log" >&2 &&
        grep -q "test result: ok. ${#SCENARIOS[@]} passed" "$wrappers/$t.log" &&
        grep -q "test result: ok. ${#OFFLINE_SCENARIOS[@]} passed" "$wrappers/$t.log" &&
        [ "$(grep -c '^test result: ok\.' "$wrappers/$t.log")" = 2 ] &&
        grep -q '^--config .* run$' "$wrappers/$t.calls" &&
        grep -q '^--config .* check ' "$wrappers/$t.calls" &&
        grep -q '^--config .* import ' "$wrappers/$t.calls"; then
        result[$t]=ok
    else
        result[$t]=FAILED
        failed=1
    fi
    secs[$t]=$(($(date +%s) - start))
    # The tests print the time from the agent's start to its first grant applied.
    first="$(grep -o 'cold start to first grant applied ([A-Za-z]*): [^ ]*' "$wrappers/$t.log" |
        sed 's/.*(\(.*\)): \(.*\)/\1 \2/' | paste -sd, - | sed 's/,/, /g' || true)"
    # And the wall time of `licd import` (the whole emulated process) by file.
    import="$(grep -o 'licd import wall time: .*' "$wrappers/$t.log" | sed 's/licd import wall time: //' || true)"
    result[$t]="${result[$t]}	first grant: ${first:-?}	import: ${import:-?}"
done

printf '\n%-32s %-10s %s\n' target result 'start to first grant applied; licd import by file; whole run'
for t in "${targets[@]}"; do
    IFS=$'\t' read -r r f i <<<"${result[$t]}"
    printf '%-32s %-10s %s; %s; %ss\n' "$t" "$r" "$f" "$i" "${secs[$t]}"
done
exit "$failed"
