#!/bin/sh
# In the VM (busybox sh, the real teelog binary): ship -> relay over vsock -> gateway -> store,
# with the shipper killed with SIGKILL in the middle of a stream three times, and the gateway
# once. Afterwards every batch the shipper spooled (it spools, fsynced, before it takes a record as
# its own) must be in the gateway's store, byte for byte, no other batch may be there, no epoch
# and seq may be signed twice, and the store must verify without a finding: nothing acknowledged
# lost, nothing signed twice. (A batch resent after a kill is stored again, byte for byte: delivery is at least once,
# and the verifier takes such a copy as the same batch.) Prints E2E PASS or E2E FAIL; exit 0 or 1.
#
#   relay-e2e.sh DIR      env: DIAL (default vsock://1:7400, VMADDR_CID_LOCAL)
#                              LISTEN (default relay_vsock = "vsock://ANY:7400")
# Outside the VM (no vsock loopback there) the same scenario runs over TCP with
#   DIAL=127.0.0.1:7411 LISTEN='relay = "127.0.0.1:7411"' relay-e2e.sh DIR
set -eu
T=$1
DIAL=${DIAL:-vsock://1:7400}
LISTEN=${LISTEN:-relay_vsock = \"vsock://ANY:7400\"}
KILLS=2
mkdir -p "$T"
GW=
SHIP=
FEEDER=
now() { cut -d' ' -f1 /proc/uptime; }
say() { echo "e2e [$(now)s] $*"; }
fail() {
  say "E2E FAIL: $*"
  for dir in ship-spool gw-spool gw-store; do
    echo "--- epoch:seq of the batches in $dir"
    all_batch_lines "$T/$dir" | batch_ids
  done
  for log in "$T"/*.log; do [ -f "$log" ] && { echo "--- $log"; tail -n 30 "$log"; }; done
  for pid in $SHIP $FEEDER $GW; do kill -9 "$pid" 2>/dev/null || true; done
  exit 1
}
# Waits up to $1 seconds for the command after it to succeed.
within() {
  limit=$1; shift
  i=0
  while ! "$@"; do
    i=$((i + 1))
    [ "$i" -le $((limit * 5)) ] || return 1
    sleep 0.2
  done
}
# The batch lines (not attestation lines) of the store or spool directory $1.
all_batch_lines() { cat "$1"/*.ndjson 2>/dev/null | grep '"header"'; }
batches_in() { all_batch_lines "$1" | wc -l; }
# ... each once, sorted.
batch_lines() { all_batch_lines "$1" | sort -u; }
# Records $1..$2 as NDJSON.
records() { seq "$1" "$2" | awk '{ printf "{\"message\":\"record %d\",\"n\":%d}\n", $1, $1 }'; }
# Records from $1 on, 100 at a time, without end: a live stream rather than a file read at once.
stream_from() {
  n=$1
  while records "$n" $((n + 99)); do n=$((n + 100)); sleep 0.05; done
}
# Whether the gateway has acknowledged $1 distinct batches: its spool is written (fsynced)
# before the ack.
gateway_holds() { [ "$(batch_lines "$T/gw-spool" | wc -l)" -ge "$1" ]; }
# One epoch:seq per batch line, on one line.
batch_ids() {
  awk '{ match($0, /"epoch":"[0-9a-f]+"/); e = substr($0, RSTART + 9, 8)
         match($0, /"seq":[0-9]+/); printf "%s:%s ", e, substr($0, RSTART + 6, RLENGTH - 6) } END { print "" }'
}

teelog keygen --dev --out "$T/id" > "$T/keygen.log" 2>&1 || fail "keygen"
echo "vm-relay-token" > "$T/token"
cat > "$T/gateway.toml" <<CONF
[spool]
dir = "$T/gw-spool"
[listen]
$LISTEN
bearer_token_file = "$T/token"
[verify]
trust_roots = ["$T/id/dev-root.pem"]
[[sinks]]
kind = "store"
dir = "$T/gw-store"
CONF
cat > "$T/ship.toml" <<CONF
identity = "$T/id"
stream = "vm"
[spool]
dir = "$T/ship-spool"
keep = true
[sources]
stdin = true
[batch]
max_records = 25
max_delay = "50ms"
heartbeat = "off"
[[sinks]]
kind = "relay"
address = "$DIAL"
bearer_token_file = "$T/token"
timeout = "20s"
CONF

gateways=0
start_gateway() {
  gateways=$((gateways + 1))
  teelog gateway --config "$T/gateway.toml" > "$T/gateway-$gateways.log" 2>&1 &
  GW=$!
  within 60 grep -q "relay listening on" "$T/gateway-$gateways.log" || fail "gateway $gateways did not listen"
  say "gateway $gateways up: $(grep -o 'relay listening on .*' "$T/gateway-$gateways.log" | head -1)"
}
# Shipper run $1 on an endless stream of records, from record $next on.
start_shipper() {
  rm -f "$T/in"; mkfifo "$T/in"
  teelog ship --config "$T/ship.toml" < "$T/in" > "$T/ship-$1.log" 2>&1 &
  SHIP=$!
  stream_from "$next" > "$T/in" 2>/dev/null &
  FEEDER=$!
  next=$((next + 1000000))
}
kill_shipper() {
  kill -9 "$SHIP" || fail "run $1: the shipper had already ended"
  wait "$SHIP" 2>/dev/null || true
  SHIP=
  kill "$FEEDER" 2>/dev/null || true
  wait "$FEEDER" 2>/dev/null || true
  say "run $1: shipper killed with SIGKILL; the gateway holds $(batches_in "$T/gw-spool") batches, the shipper's spool $(batches_in "$T/ship-spool")"
}

start_gateway
next=1
# Runs 1..KILLS: the shipper killed once the gateway has acknowledged batches this run signed,
# with more on their way.
run=1
while [ "$run" -le "$KILLS" ]; do
  before=$(batch_lines "$T/ship-spool" | wc -l)
  start_shipper "$run"
  within 120 gateway_holds $((before + 4)) || fail "run $run: nothing reached the gateway"
  kill_shipper "$run"
  run=$((run + 1))
done
# Then the gateway killed with SIGKILL under load: the shipper connects again over vsock and
# sends what was not acknowledged; then the shipper is killed too.
before=$(batch_lines "$T/ship-spool" | wc -l)
start_shipper "$run"
within 120 gateway_holds $((before + 4)) || fail "run $run: nothing reached the gateway"
kill -9 "$GW"
wait "$GW" 2>/dev/null || true
say "run $run: gateway killed with SIGKILL; it holds $(batches_in "$T/gw-spool") batches, the shipper's spool $(batches_in "$T/ship-spool")"
start_gateway
held=$(batch_lines "$T/gw-spool" | wc -l)
within 120 gateway_holds $((held + 4)) || fail "run $run: the shipper did not deliver to the restarted gateway"
kill_shipper "$run"

# The last run ends its input: what the killed runs left undelivered goes out now (runs with
# no input follow until it is all out, a bounded number of times).
records "$next" $((next + 99)) | teelog ship --config "$T/ship.toml" > "$T/ship-last.log" 2>&1 || fail "the last run failed"
tries=0
while [ "$(batch_lines "$T/ship-spool" | md5sum)" != "$(batch_lines "$T/gw-store" | md5sum)" ]; do
  tries=$((tries + 1))
  [ "$tries" -le 10 ] || break
  say "the gateway does not hold every spooled batch yet; a run with no input delivers the rest"
  teelog ship --config "$T/ship.toml" < /dev/null >> "$T/ship-last.log" 2>&1 || fail "a draining run failed"
done
kill "$GW"; wait "$GW" || fail "the gateway did not stop cleanly"
GW=

# Nothing the shipper spooled is missing from the gateway's store, and nothing is there twice.
batch_lines "$T/ship-spool" > "$T/shipped"
batch_lines "$T/gw-store" > "$T/stored"
spooled=$(wc -l < "$T/shipped")
[ "$spooled" -gt 10 ] || fail "only $spooled batches were spooled"
cmp -s "$T/shipped" "$T/stored" || fail "the gateway's store ($(wc -l < "$T/stored") batches) differs from the shipper's spool ($spooled): $(diff "$T/shipped" "$T/stored" | head -5)"
twice=$(batch_ids < "$T/stored" | tr ' ' '\n' | sort | uniq -d | tr '\n' ' ')
[ -z "$twice" ] || fail "two different batches were stored for epoch:seq $twice"
resent=$(($(batches_in "$T/gw-store") - spooled))
# The verifier's word: chains continuous across the kills, no seq signed twice, attested keys.
teelog verify --store "$T/gw-store" --trust-root "$T/id/dev-root.pem" > "$T/verify.log" 2>&1 || fail "teelog verify of the gateway's store: $(cat "$T/verify.log")"
teelog verify --store "$T/ship-spool" --trust-root "$T/id/dev-root.pem" > "$T/verify-spool.log" 2>&1 || fail "teelog verify of the shipper's spool"
summary=$(grep -o '[0-9]* batches, [0-9]* records' "$T/verify.log" | head -1)
[ "$summary" = "$(grep -o '[0-9]* batches, [0-9]* records' "$T/verify-spool.log" | head -1)" ] || fail "verify counts differ: $summary"
say "E2E PASS: $((KILLS + 1)) kill -9 of the shipper and 1 of the gateway; $summary stored over $DIAL ($resent resent after a kill and stored again byte for byte), all verified, no seq signed twice"
