#!/usr/bin/env bash
# The largest contributors to a target's `licd`: code size per crate and the largest
# functions, read from the symbol table of an unstripped build of the same (firmware) profile.
#
#   cross/bloat.sh TARGET [cargo feature args...]     e.g. cross/bloat.sh aarch64-unknown-linux-musl
#
# Works for every target in cross/lib.sh (GNU nm reads any little-endian ELF); build.sh runs it
# when a target is over its budget. The unstripped build goes to its own target dir
# (target/cross-bloat) so the stripped one in target/cross stays up to date. For a finer view
# on the stable targets, `cargo bloat` (crates.io) gives the same per-crate split with std
# broken down: CARGO_PROFILE_FIRMWARE_STRIP=false cargo bloat --profile firmware -p licd-agent
# --bin licd --target TARGET --crates.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=cross/lib.sh
source "$ROOT/cross/lib.sh"

t="${1:?usage: cross/bloat.sh TARGET [--no-default-features] [--features F]}"
shift
target_kind "$t" >/dev/null || { echo "bloat.sh: unsupported target $t" >&2; exit 2; }
top="${LICD_BLOAT_TOP:-15}"

export CARGO_TARGET_DIR="${LICD_BLOAT_TARGET_DIR:-$ROOT/target/cross-bloat}"
CARGO_PROFILE_FIRMWARE_STRIP=false build_licd "$t" "$@" >&2
bin="$(licd_path "$t")"

# nm lines: ADDRESS SIZE TYPE NAME, sizes in decimal, names demangled. Code only (t/T/w/W),
# as cargo bloat counts. Plain POSIX awk + sort (Debian's default awk is mawk).
syms="$(mktemp)"
trap 'rm -f "$syms"' EXIT
nm -C -S -t d "$bin" | awk 'NF >= 4 && $3 ~ /^[tTwW]$/ {
        size = $2 + 0
        name = $4
        for (i = 5; i <= NF; i++) name = name " " $i
        c = name
        sub(/^[<&_([]+/, "", c)
        sub(/^(dyn |mut |impl )+/, "", c)
        sub(/^[<&_([]+/, "", c)
        sub(/^[A-Za-z_0-9]+ as /, "", c)   # <T as core::fmt::Debug>: a generic, count the trait
        sub(/^(bool|void|int|unsigned|char|long) /, "", c)   # C++ return types (libunwind)
        if (c ~ /^ring_core_/ || c ~ /^(ChaCha20|GFp|aes_|gcm_|bn_|ecp_|x25519|p256|p384|LIMBS_|CRYPTO_|poly1305)/)
            c = "ring (C/asm)"
        else if (index(c, "::") > 0)
            c = substr(c, 1, index(c, "::") - 1)
        else
            c = "[C: libc, compiler-rt]"
        printf "%d\t%s\t%s\n", size, c, name
    }' >"$syms"

set +o pipefail # `head` closes the pipes early
total=$(awk -F'\t' '{ s += $1 } END { print s + 0 }' "$syms")
echo "$t: code (.text symbols) $total bytes; file ${bin#"$ROOT"/} (unstripped)"
printf '\n%-28s %9s %6s\n' crate bytes %
awk -F'\t' '{ c[$2] += $1 } END { for (k in c) printf "%d\t%s\n", c[k], k }' "$syms" |
    sort -rn | head -n "$top" |
    awk -F'\t' -v total="$total" '{ printf "%-28s %9d %5.1f%%\n", $2, $1, 100 * $1 / total }'
printf '\n%9s  %s\n' bytes 'largest functions'
sort -t"$(printf '\t')" -k1,1rn "$syms" | head -n "$top" |
    awk -F'\t' '{ printf "%9d  %s\n", $1, substr($3, 1, 110) }'
