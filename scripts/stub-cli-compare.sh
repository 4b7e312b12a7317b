#!/bin/bash
# Runs each admin CLI command with two licd-stub binaries (e.g. one built before a CLI change
# and one after) against one running stub, seeded through the CLI, with a real licd agent
# reporting to it; prints every difference in stdout, stderr or exit code, then the mutations
# whose answers differ by design (run once, new binary). Exit 1 if any command differs.
#
#   cargo build -p licd-stub -p licd-agent
#   scripts/stub-cli-compare.sh /path/to/old/licd-stub [target/debug/licd-stub]
#
# The transcript of the new binary's answers is left in the temporary directory it prints.
set -u
OLD=${1:?usage: scripts/stub-cli-compare.sh OLD_LICD_STUB [NEW_LICD_STUB]}
NEW=${2:-target/debug/licd-stub}
LICD=${LICD:-target/debug/licd}
D=$(mktemp -d)
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
BP=$(port); AP=$(port)
$NEW keys init --key-dir $D/keys >/dev/null 2>&1 || { echo "keys init failed"; exit 1; }
ROOT=$($NEW keys export-root --key-dir $D/keys 2>/dev/null | tail -1)
$NEW serve --key-dir $D/keys --ledger $D/ledger.db --listen 127.0.0.1:$BP --admin-listen 127.0.0.1:$AP > $D/serve.log 2>&1 &
SERVE=$!
export LICD_STUB_ADMIN_URL=http://127.0.0.1:$AP LICD_STUB_TOKEN_FILE=$D/keys/admin.token
for i in $(seq 50); do $NEW customers >/dev/null 2>&1 && break; sleep 0.2; done
q() { $NEW "$@" >/dev/null 2>&1 || echo "seed failed: $*"; }
q customers add msp --msp --name "The MSP"
q customers add acme --name Acme
q customers add beta
q catalog add LIC-AP --service wifi --class wireless --vms-per-seat 4
q catalog add LIC-SEC --service security --class wireless
q subscriptions add SUB-1 --seats LIC-AP=10 --seats LIC-SEC=1 --end 2030-01-01 --owner acme --name "Acme wifi"
q subscriptions add SUB-2 --seats LIC-AP=3 --end 2031-06-30 --claim-key KEY-2
q auto-license enable --service wifi,security
mkdir -p $D/agent/state
cat > $D/agent/licd.toml <<TOML
tenant = "acme"
services = ["wifi", "security", "fax"]
state_dir = "$D/agent/state"
roots = ["$ROOT"]

[broker]
url = "mqtt://127.0.0.1:$BP"
allow_insecure = true

[api]
socket = "$D/agent/licd.sock"

[identity]
device_id = "ap-1"
model = "AP-TEST"
serial = "SN-1"
product_class = "wireless"
TOML
$LICD --config $D/agent/licd.toml run > $D/agent/licd.log 2>&1 &
AGENT=$!
for i in $(seq 100); do $NEW devices 2>/dev/null | grep -q ap-1 && break; sleep 0.2; done
sleep 1
fail=0; n=0
cmp_one() {
  n=$((n+1))
  $OLD "$@" > $D/o.out 2> $D/o.err; oc=$?
  $NEW "$@" > $D/n.out 2> $D/n.err; nc=$?
  { echo "$ licd-stub $* (exit $nc)"; cat $D/n.out $D/n.err; } >> $D/transcript.txt
  if ! cmp -s $D/o.out $D/n.out || ! cmp -s $D/o.err $D/n.err || [ $oc != $nc ]; then
    fail=$((fail+1)); echo "DIFF: $* (exit $oc vs $nc)"; diff $D/o.out $D/n.out; diff $D/o.err $D/n.err
  fi
}
for j in "" --json; do
  cmp_one customers $j
  cmp_one customers show acme $j
  cmp_one customers show nope $j
  cmp_one customers rename beta Beta $j
  cmp_one catalog $j
  cmp_one subscriptions $j
  cmp_one subscriptions list --customer acme --status active $j
  cmp_one subscriptions list --per-page 3 $j
  cmp_one subscriptions show SUB-1 $j
  cmp_one subscriptions show SUB-2 $j
  cmp_one subscriptions show nope $j
  cmp_one subscriptions validate KEY-2 $j
  cmp_one subscriptions validate NOPE $j
  cmp_one subscriptions claim KEY-2 --customer beta --validate $j
  cmp_one subscriptions bind SUB-1 --customer beta --validate $j
  cmp_one subscriptions bind SUB-1 --customer nope --validate $j
  cmp_one auto-license $j
  cmp_one auto-license enable --service wifi --validate $j
  cmp_one auto-license enable --service fax --validate $j
  cmp_one devices $j
  cmp_one devices list --customer acme $j
  cmp_one devices list --filter 'productClass -eq "wireless"' $j
  cmp_one devices show acme ap-1 $j
  cmp_one devices show acme nope $j
  cmp_one compliance $j
  cmp_one compliance acme beta $j
  cmp_one licenses $j
  cmp_one licenses list --filter 'sku -eq "LIC-AP"' $j
  cmp_one licenses assignments $j
  cmp_one licenses assignments --license SUB-1:LIC-AP $j
  cmp_one licenses set-seats 10 --only SUB-1:LIC-AP $j
  cmp_one licenses set-seats 0 --only SUB-1:LIC-AP $j
  cmp_one licenses set-seats 5 $j
done
# Mutations whose answer differs by design between two runs: compare the shape once each.
echo "--- one-off mutations (new binary) ---"
$NEW subscriptions bind SUB-1 --customer beta; echo "exit $?"
$NEW subscriptions claim KEY-2 --customer beta; echo "exit $?"
$NEW devices reissue acme ap-1; echo "exit $?"
$NEW unassign --service security --include acme; echo "exit $?"
$NEW auto-license disable --service wifi --include beta; echo "exit $?"
$NEW customers add gamma; echo "exit $?"
$NEW customers remove gamma; echo "exit $?"
echo "$n commands compared, $fail differ (transcript: $D/transcript.txt)"
kill $AGENT $SERVE 2>/dev/null; wait 2>/dev/null
[ $fail = 0 ]
