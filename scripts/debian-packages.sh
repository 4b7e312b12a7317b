#!/usr/bin/env bash
# Debian packages (issue 22): builds `licd` and `licd-stub` with cargo-deb (release profile),
# checks them with lintian (no errors allowed), then installs them on this machine with
# `dpkg -i`, runs the installed binaries, and removes and purges them, checking what each step
# must leave behind. Called by .ci/run; needs root (CI runs as root). Installs cargo-deb
# (pinned) and lintian when missing. Works without a running systemd: the maintainer scripts
# only call systemctl when /run/systemd/system exists.
#
# Output: target/debian/licd_<version>-1_<arch>.deb and licd-stub_…; LICD_DEB_KEEP_INSTALLED=1
# leaves them installed (for a look around).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CARGO_DEB_VERSION=3.8.0

if [ "$(id -u)" -ne 0 ]; then
    echo "debian-packages.sh: needs root (dpkg -i / -r / --purge)" >&2
    exit 1
fi

# --- Tools ----------------------------------------------------------------------------------
if ! cargo deb --version 2>/dev/null | grep -qF "$CARGO_DEB_VERSION"; then
    echo "debian-packages.sh: installing cargo-deb $CARGO_DEB_VERSION" >&2
    cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION"
fi
missing=()
command -v lintian >/dev/null 2>&1 || missing+=(lintian)
# dpkg-shlibdeps (cargo-deb's `$auto` dependencies).
command -v dpkg-shlibdeps >/dev/null 2>&1 || missing+=(dpkg-dev)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "debian-packages.sh: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends "${missing[@]}"
fi

# --- Build and lint -------------------------------------------------------------------------
rm -rf target/debian
# One release build of both binaries (built together, so shared crates are built once), then
# cargo-deb packs them without building again.
cargo build --release --locked -p licd-agent -p licd-stub
licd_deb=$(cargo deb -p licd-agent --no-build --output target/debian/ | tail -1)
stub_deb=$(cargo deb -p licd-stub --no-build --output target/debian/ | tail -1)
ls -l "$licd_deb" "$stub_deb"
# Errors fail; warnings are printed. Suppressed: no-manual-page (the binaries document
# themselves with `--help`, and the docs ship in /usr/share/doc), initial-upload-closes-no-bugs
# (not uploaded to Debian).
lintian --fail-on error --suppress-tags no-manual-page,initial-upload-closes-no-bugs \
    "$licd_deb" "$stub_deb"

# --- Install, run, remove, purge ------------------------------------------------------------
fail() {
    echo "debian-packages.sh: FAIL: $*" >&2
    exit 1
}
cleanup() {
    if [ "${LICD_DEB_KEEP_INSTALLED:-0}" != 1 ]; then
        dpkg --purge licd licd-stub >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT

dpkg -i "$licd_deb" "$stub_deb"

version=$(licd --version)
echo "installed: $version; $(licd-stub --version)"
[[ "$version" == "licd "* ]] || fail "licd --version said: $version"
getent passwd licd >/dev/null || fail "no user licd after install"
[ "$(stat -c '%U:%G %a' /var/lib/licd)" = "licd:licd 700" ] ||
    fail "/var/lib/licd is $(stat -c '%U:%G %a' /var/lib/licd)"
dpkg-query -W -f='${Conffiles}\n' licd | grep -q '^ /etc/licd/licd.toml ' ||
    fail "/etc/licd/licd.toml is not a conffile"
for f in /usr/lib/systemd/system/licd.service /usr/lib/sysusers.d/licd.conf \
    /usr/share/doc/licd/licd.example.toml; do
    [ -f "$f" ] || fail "$f not installed"
done

# The default config: diag --offline runs every offline step and exits 1 (warnings only: no
# device key and nothing cached until the daemon first runs, no daemon answering). 0 would
# mean a step it cannot pass on a fresh install passed; 2 a step failed (config, state dir…).
set +e
diag=$(licd --config /etc/licd/licd.toml diag --offline 2>&1)
rc=$?
set -e
echo "$diag"
[ "$rc" -eq 1 ] || fail "licd diag --offline exited $rc, expected 1 (warnings only)"
grep -q '^ok    config' <<<"$diag" || fail "diag: the default config is not ok"
grep -q '^ok    state dir' <<<"$diag" || fail "diag: the state directory is not ok"

# remove: binaries gone, config and state kept.
dpkg -r licd licd-stub
[ ! -e /usr/bin/licd ] && [ ! -e /usr/bin/licd-stub ] || fail "binaries left after dpkg -r"
[ -f /etc/licd/licd.toml ] || fail "dpkg -r removed the conffile"
[ -d /var/lib/licd ] || fail "dpkg -r removed the state directory"

# purge: config and state gone, nothing of ours left in dpkg's database (licd-stub has no
# conffiles: `dpkg -r` already removed it entirely).
dpkg --purge licd
[ ! -e /etc/licd ] || fail "/etc/licd left after purge: $(ls -la /etc/licd)"
[ ! -e /var/lib/licd ] || fail "/var/lib/licd left after purge"
if dpkg-query -W licd licd-stub >/dev/null 2>&1; then
    fail "dpkg still knows the packages after purge"
fi
echo "debian-packages.sh: ok (built, lintian clean of errors, installed, ran, removed, purged)"
