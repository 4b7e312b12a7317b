#!/usr/bin/env bash
# The project's test command: installs the system packages the tests need when they are
# missing, then runs the whole test suite. README's Quick start and .ci/run call this script;
# add new steps here, not there. Extra arguments go to `cargo test` (e.g. `-- --nocapture`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# --- System packages ------------------------------------------------------------------------
# mosquitto: the e2e tests (tests/) start their own brokers from /usr/sbin/mosquitto.
missing=()
if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
    missing+=(mosquitto)
fi
# nats-server: tests/tests/nats_cluster.rs starts its own 3-node cluster (MQTT on clustered
# JetStream) from /usr/bin/nats-server, the clustered broker of docs/STUB.md.
if ! command -v nats-server >/dev/null 2>&1 && [ ! -x /usr/bin/nats-server ]; then
    missing+=(nats-server)
fi
# faketime: tests/tests/clock_attacks.rs runs the agent under libfaketime (LD_PRELOAD).
have_faketime=0
for lib in /usr/lib/*/faketime/libfaketimeMT.so.1 /usr/lib/faketime/libfaketimeMT.so.1; do
    [ -e "$lib" ] && have_faketime=1
done
if [ "$have_faketime" -eq 0 ]; then
    missing+=(faketime)
fi

# postgresql: tests/tests/ledger_backends.rs and the replica tests start their own PostgreSQL
# cluster (initdb in a temp dir, /usr/lib/postgresql/N/bin) for the controller's ledger.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    missing+=(postgresql)
fi

# chromium + chromium-driver: tests/tests/browser.rs drives the stub's dashboard in headless
# Chromium through chromedriver (it fails without them unless LICD_SKIP_BROWSER=1).
if [ "${LICD_SKIP_BROWSER:-0}" != 1 ]; then
    if [ ! -x /usr/lib/chromium/chromium ] && ! command -v chromium >/dev/null 2>&1; then
        # fonts-liberation is only a Recommends of chromium (not installed below): without a
        # font the screenshots show no text.
        missing+=(chromium fonts-liberation)
    fi
    if ! command -v chromedriver >/dev/null 2>&1; then
        missing+=(chromium-driver)
    fi
fi

if [ "${#missing[@]}" -gt 0 ]; then
    echo "test.sh: installing ${missing[*]}" >&2
    sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || {
            echo "test.sh: need root (or sudo) to install: ${missing[*]}" >&2
            exit 1
        }
        sudo=(sudo)
    fi
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update
    "${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}"

    # The package's own service (port 1883) is not what the tests use: every test starts its
    # own broker on a free loopback port with a generated config. Do not leave one running
    # that we installed only for the tests.
    if [[ " ${missing[*]} " == *" mosquitto "* ]] && [ -d /run/systemd/system ]; then
        "${sudo[@]}" systemctl disable --now mosquitto >/dev/null 2>&1 || true
    fi
    # Likewise the package's own cluster (port 5432): the tests run their own.
    if [[ " ${missing[*]} " == *" postgresql "* ]]; then
        if [ -d /run/systemd/system ]; then
            "${sudo[@]}" systemctl disable --now postgresql >/dev/null 2>&1 || true
        elif command -v pg_ctlcluster >/dev/null 2>&1; then
            pg_lsclusters -h 2>/dev/null | while read -r ver name _; do
                "${sudo[@]}" pg_ctlcluster "$ver" "$name" stop >/dev/null 2>&1 || true
            done
        fi
    fi
    # The same for nats-server (port 4222).
    if [[ " ${missing[*]} " == *" nats-server "* ]] && [ -d /run/systemd/system ]; then
        "${sudo[@]}" systemctl disable --now nats-server >/dev/null 2>&1 || true
    fi
fi

# --- Tests ----------------------------------------------------------------------------------
cargo test --workspace --locked "$@"

# --- Admin API fuzz gate --------------------------------------------------------------------
# schemathesis fuzzes the admin API from docs/openapi.json against the licd-stub the tests just
# built (about 2 min; installs python3-venv and the pinned schemathesis into target/ when
# missing; see the script). LICD_FUZZ=0 skips it.
if [ "${LICD_FUZZ:-1}" != 0 ]; then
    if [ -x target/debug/licd-stub ] && [ -x target/debug/licd ]; then
        export LICD_STUB_BIN=$PWD/target/debug/licd-stub LICD_BIN=$PWD/target/debug/licd
    fi
    if [ -x target/debug/licd ]; then
        export LICD_BIN=$PWD/target/debug/licd
    fi
    bash scripts/fuzz-admin-api.sh
fi
