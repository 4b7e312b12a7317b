#!/usr/bin/env bash
# Fuzz gate of the admin API (issue 16): schemathesis, a property-based HTTP fuzzer, generates
# requests from docs/openapi.json and runs them against a real `licd-stub serve` with a seeded
# ledger (an MSP, two tenants, a catalogue, an owned, a bound and a claimable subscription,
# auto-licensing, three devices that reported through real agents), once with an admin token,
# once with a read token, once with a tenant token (acme's) and once with no token. Every check
# is on: no 5xx, every status code and body as the document says, requests the document allows are accepted and requests it
# does not allow are refused, 405 for undocumented methods, auth enforced. Any finding, or the
# server not alive at the end, fails the script.
#
# schemathesis is pinned (scripts/fuzz-admin-api.requirements.txt, every package) and installed
# into target/schemathesis-venv, out of git. scripts/test.sh runs this after the test suite.
#
#   FUZZ_MAX_EXAMPLES=N  cases per operation and phase (default 50: about 2 minutes for the
#                        three runs on 2 cores)
#   FUZZ_SEED=N          hypothesis seed (default fixed, so CI is reproducible; any other
#                        number explores elsewhere)
#   FUZZ_WORKERS=N       concurrent schemathesis workers (default 1: one is as fast on 2 cores,
#                        and CPython 3.11 before 3.11.8 can fail `ast.parse` in hypothesis when
#                        two threads describe strategies at once, gh-106905)
#   FUZZ_KEEP=1          keep the work directory (server log, reports) and print where it is
#   LICD_STUB_BIN=PATH   the licd-stub to fuzz (scripts/test.sh passes the one `cargo test`
#                        just built); default: `cargo build -p licd-stub` and target/debug
#   LICD_BIN=PATH        the licd agent that seeds the devices (same defaults)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$PWD

max_examples=${FUZZ_MAX_EXAMPLES:-50}
seed=${FUZZ_SEED:-160016}
venv=$repo/target/schemathesis-venv
requirements=$repo/scripts/fuzz-admin-api.requirements.txt
started=$SECONDS

say() { echo "fuzz-admin-api: $*" >&2; }
keep=${FUZZ_KEEP:-0}
die() {
    say "FAILED: $*"
    keep=1 # the server log and the reports say more
    exit 1
}

# --- schemathesis, pinned, in its own virtualenv ----------------------------------------------
py=python3
if ! "$py" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    say "installing python3-venv"
    sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || die "need root (or sudo) to install python3-venv"
        sudo=(sudo)
    fi
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update
    "${sudo[@]}" apt-get install -y --no-install-recommends python3-venv
    py=/usr/bin/python3
fi
# Reinstalled when the pinned set changes (the venv keeps a copy of what it was built from) or
# the venv no longer runs (its Python went away).
if ! cmp -s "$requirements" "$venv/requirements.txt" 2>/dev/null ||
    ! "$venv/bin/schemathesis" --version >/dev/null 2>&1; then
    say "installing schemathesis into $venv"
    rm -rf "$venv"
    "$py" -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
    cp "$requirements" "$venv/requirements.txt"
fi
st=$venv/bin/schemathesis

# --- the stub, seeded -------------------------------------------------------------------------
if [ -n "${LICD_STUB_BIN:-}" ] && [ -n "${LICD_BIN:-}" ]; then
    stub=$LICD_STUB_BIN
    licd=$LICD_BIN
else
    cargo build -p licd-stub -p licd-agent --locked --quiet
    stub=$repo/target/debug/licd-stub
    licd=$repo/target/debug/licd
fi
# The agents are real `licd` daemons (licd-stub no longer carries the agent).
if [ -n "${LICD_BIN:-}" ]; then
    licd=$LICD_BIN
else
    cargo build -p licd-agent --bin licd --locked --quiet
    licd=$repo/target/debug/licd
fi

server_pid=
agent_pids=()
cleanup() {
    for p in "${agent_pids[@]}" $server_pid; do
        kill "$p" 2>/dev/null || true
    done
    [ -n "${work:-}" ] || return 0
    if [ "$keep" = 1 ]; then
        say "work directory kept: $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
work=$(mktemp -d "${TMPDIR:-/tmp}/licd-fuzz.XXXXXX")

# Waits up to $1 seconds for command $2... to succeed.
wait_for() {
    local timeout=$1 deadline=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.2
    done
}

"$stub" keys init --key-dir "$work/keys" >"$work/root.hex" 2>/dev/null
"$stub" token create --key-dir "$work/keys" --name reader --kind read >/dev/null 2>&1
# A tenant token (issue 21): scoped to acme, it must get only documented answers too.
"$stub" token create --key-dir "$work/keys" --name acme-ops --kind admin --tenant acme >/dev/null 2>&1
admin_token=$(cat "$work/keys/admin.token")
read_token=$(cat "$work/keys/reader.token")
tenant_token=$(cat "$work/keys/acme-ops.token")

"$stub" --log-format json serve --key-dir "$work/keys" --ledger "$work/ledger.db" \
    --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 >"$work/serve.log" 2>&1 &
server_pid=$!
# Both listeners are logged with their address ({"fields": {"message": ..., "addr": ...}}).
addr_of() {
    python3 - "$work/serve.log" "$1" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    try:
        f = json.loads(line).get("fields", {})
    except ValueError:
        continue
    if f.get("message") == sys.argv[2]:
        print(f["addr"])
        sys.exit(0)
sys.exit(1)
EOF
}
wait_for 30 addr_of "admin API listening" || die "licd-stub serve did not start: $(tail -5 "$work/serve.log")"
api=http://$(addr_of "admin API listening")
broker=$(addr_of "embedded broker listening")
say "licd-stub serve (pid $server_pid): admin API $api, broker $broker"
# The gate fuzzes the committed document: it must be the one this server serves.
python3 - "$api/openapi.json" "$repo/docs/openapi.json" <<'EOF' ||
import json, sys, urllib.request
served = json.load(urllib.request.urlopen(sys.argv[1], timeout=10))
sys.exit(0 if served == json.load(open(sys.argv[2])) else 1)
EOF
    die "docs/openapi.json is not what this licd-stub serves (LICD_UPDATE_OPENAPI=1 cargo test -p licd-stub --test admin_openapi rewrites it)"

# The ids below are the dictionaries of scripts/fuzz-admin-api.toml: keep them the same.
export LICD_STUB_ADMIN_URL=$api LICD_STUB_TOKEN_FILE=$work/keys/admin.token
cli() { "$stub" "$@" >>"$work/seed.log" 2>&1 || die "seeding: licd-stub $* (see $work/seed.log)"; }
cli customers add msp --msp --name "Fuzz MSP"
cli customers add acme --name "Acme"
cli customers add globex
cli catalog add LIC-AP --service wifi-ap --class wireless
cli catalog add LIC-VPN --service vpn --class wireless --vms-per-seat 4
cli subscriptions add SUB-1 --owner acme --seats LIC-AP=5 --seats LIC-VPN=2 --end 2099-01-01
cli subscriptions add SUB-2 --owner msp --seats LIC-AP=1 --end 2098-06-30
cli subscriptions add SUB-3 --claim-key KEY-3 --seats LIC-AP=3 --end 2099-01-01
cli subscriptions bind SUB-1 --customer globex
cli auto-license enable --service wifi-ap,vpn

# Three real agents report; the controller records their devices and sends bundles. They are
# stopped before the fuzzing: the devices stay in the ledger.
root=$(cat "$work/root.hex")
for spec in acme:acme-ap-1:6 globex:globex-ap-1:0 msp:msp-ap-1:1; do
    IFS=: read -r tenant device vms <<<"$spec"
    dir=$work/agents/$device
    mkdir -p "$dir"
    cat >"$dir/licd.toml" <<EOF
tenant = "$tenant"
services = ["wifi-ap", "vpn"]
state_dir = "$dir/state"
roots = ["$root"]

[broker]
url = "mqtt://$broker"
allow_insecure = true
reconnect_max_secs = 2

[api]
socket = "$dir/licd.sock"

[identity]
device_id = "$device"
model = "AP-515"
serial = "SN-$device"
product_class = "wireless"

[vm]
probe = "fixed"
count = $vms
EOF
    "$licd" --config "$dir/licd.toml" run >"$dir/licd.log" 2>&1 &
    agent_pids+=($!)
done
three_devices_with_bundles() {
    "$stub" devices --json | python3 -c '
import json, sys
devices = json.load(sys.stdin)
items = devices["items"] if isinstance(devices, dict) else devices
sys.exit(0 if len(items) == 3 and all(d["bundle"]["seq"] >= 1 for d in items) else 1)'
}
wait_for 60 three_devices_with_bundles || die "the agents' devices did not appear (see $work/agents)"
for p in "${agent_pids[@]}"; do
    kill "$p" && wait "$p" 2>/dev/null || true
done
agent_pids=()
say "ledger seeded: 3 customers, 2 SKUs, 3 subscriptions, 3 devices (at $((SECONDS - started))s)"

# --- fuzz with each token ---------------------------------------------------------------------
alive() { kill -0 "$server_pid" 2>/dev/null; }
failed=()
run() {
    local name=$1
    shift
    say "schemathesis, $name ($max_examples cases per operation and phase, seed $seed)"
    local t0=$SECONDS
    # The hard limit only stops a run that hangs (a normal one takes about a minute alone, up
    # to five on a machine shared with other builds; FUZZ_RUN_TIMEOUT changes it).
    if ! (cd "$work" && timeout "${FUZZ_RUN_TIMEOUT:-900}" "$st" --no-color --config-file "$repo/scripts/fuzz-admin-api.toml" run \
        "$repo/docs/openapi.json" --url "$api" "$@" \
        --checks all --max-examples "$max_examples" --seed "$seed" \
        --workers "${FUZZ_WORKERS:-1}" --request-timeout 30 --generation-database none \
        --report junit --report-junit-path "$work/junit-$name.xml") >"$work/fuzz-$name.txt" 2>&1; then
        failed+=("$name")
        cat "$work/fuzz-$name.txt" >&2
    fi
    grep -E "^ *Test cases:|generated" "$work/fuzz-$name.txt" | tail -2 >&2 || true
    say "$name done in $((SECONDS - t0))s"
    alive || die "licd-stub serve died during the $name run: $(tail -20 "$work/serve.log")"
}
run admin-token --header "Authorization: Bearer $admin_token"
run read-token --header "Authorization: Bearer $read_token"
run tenant-token --header "Authorization: Bearer $tenant_token"
run no-token

# --- crash detection --------------------------------------------------------------------------
alive || die "licd-stub serve is not running after the fuzzing"
# A panicking request is a 500 (a finding above); this also catches one outside a request.
if grep -q 'panicked' "$work/serve.log"; then
    grep -m5 'panicked' "$work/serve.log" >&2
    die "licd-stub serve logged a panic"
fi
kill -INT "$server_pid" # what `serve` stops on (ctrl-c)
wait "$server_pid" 2>/dev/null || die "licd-stub serve did not stop cleanly (exit $?)"
server_pid=

[ "${#failed[@]}" -eq 0 ] || die "findings with: ${failed[*]} (reports above; FUZZ_SEED=$seed reproduces)"
say "no findings in $((SECONDS - started))s"
