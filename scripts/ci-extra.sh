#!/usr/bin/env bash
# Extra CI steps of the hardening work (issue 8), called from .ci/run after the tests:
#   1. the supply-chain policy: `cargo deny check licenses bans sources` with deny.toml;
#   2. the fuzz corpora replayed on stable (they also run inside `cargo test --workspace`;
#      run here by name so a CI log shows them even when the test step is filtered).
#
# `cargo deny check advisories` is NOT run: it downloads the RustSec database from GitHub and
# this CI reaches package registries only. Run it (or `cargo audit`) where the network allows.
#
# cargo-deny is installed from crates.io when missing (`cargo install --locked`: about 8 min
# on the 2-core CI machine, once per machine; cached in ~/.cargo/bin afterwards). Set
# LICD_SKIP_DENY=1 to skip the step on a machine without the time or the registry.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

echo "== cargo deny (licenses, bans, sources)"
if [ "${LICD_SKIP_DENY:-0}" = "1" ]; then
    echo "ci-extra: LICD_SKIP_DENY=1, cargo deny skipped" >&2
else
    if ! cargo deny --version >/dev/null 2>&1; then
        echo "ci-extra: installing cargo-deny (cargo install --locked)" >&2
        cargo install cargo-deny --locked
    fi
    cargo deny --version
    cargo deny check licenses bans sources
fi

echo "== fuzz corpus replays (stable)"
cargo test --locked -p licd-protocol --test fuzz_corpus
cargo test --locked -p licd-agent --test fuzz_corpus
