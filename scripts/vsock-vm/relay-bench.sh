#!/bin/sh
# In the VM: relay throughput over vsock beside TCP, on the same VM and gateway (figures, not a
# test). Each round signs N records into a spool with no sink (timed: the signing rate), then
# starts the shipper again on that spool with a relay sink and times until the gateway holds
# every batch (the shipper, with no input, stops once all is acknowledged: verified and fsynced in
# the gateway's spool; the time includes the shipper's start), once over vsock://1:7400 and once
# over 127.0.0.1:7401, each on a stream of its own. Under software emulation: compare the two,
# not the numbers with a real machine's.
#   scripts/vsock-vm/run target/release/teelog scripts/vsock-vm/relay-bench.sh [N] [ROUNDS] [BATCH]
set -eu
T=$1
N=${2:-2000}
ROUNDS=${3:-2}
BATCH=${4:-100}
mkdir -p "$T"
# TRANSPORTS=tcp runs it where there is no vsock (outside the VM).
now() { cut -d' ' -f1 /proc/uptime; }
fail() { echo "bench: FAIL: $*"; for log in "$T"/*.log; do echo "--- $log"; tail -n 20 "$log"; done; exit 1; }
records() { seq "$1" "$2" | awk '{ printf "{\"message\":\"record %d\",\"n\":%d}\n", $1, $1 }'; }
rate() { awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN { printf "%.0f", n / (b - a) }'; }
# Batches of stream $1 the gateway has verified and spooled.
spooled_at_gateway() { cat "$T"/gw-spool/*.ndjson 2>/dev/null | grep -c "^{\"stream\":\"$1\",\"signature_valid\":true}" || true; }

teelog keygen --dev --out "$T/id" > "$T/keygen.log" 2>&1 || fail keygen
cat > "$T/gateway.toml" <<CONF
[spool]
dir = "$T/gw-spool"
keep = true
[listen]
relay = "127.0.0.1:7401"
relay_vsock = "vsock://ANY:7400"
[verify]
trust_roots = ["$T/id/dev-root.pem"]
CONF
teelog gateway --config "$T/gateway.toml" --insecure-no-auth > "$T/gateway.log" 2>&1 &
gw=$!
i=0
until [ "$(grep -c 'relay listening on' "$T/gateway.log")" = 2 ]; do
  i=$((i + 1)); [ "$i" -lt 300 ] || fail "the gateway did not listen"; sleep 0.2
done

# ship.toml for stream $1, spool $2, with a relay sink to $3 (or none).
ship_config() {
  printf 'identity = "%s"\nstream = "%s"\n[spool]\ndir = "%s"\nkeep = true\n[sources]\nstdin = true\n[batch]\nmax_records = %s\nheartbeat = "off"\n' \
    "$T/id" "$1" "$2" "$BATCH"
  [ -z "$3" ] || printf '[[sinks]]\nkind = "relay"\nname = "gateway"\naddress = "%s"\n' "$3"
}

round=1
while [ "$round" -le "$ROUNDS" ]; do
  for transport in ${TRANSPORTS:-vsock tcp}; do
    case $transport in vsock) dial=vsock://1:7400 ;; tcp) dial=127.0.0.1:7401 ;; esac
    stream=bench-$transport-$round
    spool=$T/spool-$stream
    ship_config "$stream" "$spool" "" > "$T/sign.toml"
    a=$(now)
    records 1 "$N" | teelog ship --config "$T/sign.toml" > "$T/sign.log" 2>&1 || fail "signing $stream"
    b=$(now)
    batches=$(cat "$spool"/*.ndjson | grep -c '"header"')
    ship_config "$stream" "$spool" "$dial" > "$T/relay.toml"
    # No input: the shipper delivers what its spool holds and stops (within its 10 s drain).
    c=$(now)
    teelog ship --config "$T/relay.toml" < /dev/null > "$T/relay-$stream.log" 2>&1 || fail "relaying $stream"
    d=$(now)
    got=$(spooled_at_gateway "$stream")
    [ "$got" = "$batches" ] || fail "$stream: the gateway verified $got of $batches batches"
    echo "bench round $round $transport: $N records in $batches batches; signing $(rate "$N" "$a" "$b") records/s; relayed to the gateway (verified, fsynced) in $(awk -v a="$c" -v b="$d" 'BEGIN { printf "%.2f", b - a }')s: $(rate "$N" "$c" "$d") records/s"
  done
  round=$((round + 1))
done
kill "$gw"
wait "$gw" || true
