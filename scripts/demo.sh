#!/usr/bin/env bash
# Sets up this machine and runs the Airlock demo: a 2-desktop pool of the demo guest
# serving the API on 127.0.0.1:7480 (examples/demo.toml), then a guided session: lease a
# desktop, forward the 161 MB sample referral disc into it over USB, show what the
# desktop read, release it and show the reset. The broker keeps running until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

[ "${AIRLOCK_SKIP_SETUP:-}" = 1 ] || scripts/setup.sh
say "building airlockd and airlock (release)"
cargo build --release -q -p airlockd -p airlock

CONFIG=examples/demo.toml
STATE=build/demo-state
AIRLOCKD="target/release/airlockd --config $CONFIG"
URL=http://127.0.0.1:7480
export AIRLOCK_TOKEN=demo-terminal

$AIRLOCKD stop-desktops >/dev/null 2>&1 || true
mkdir -p "$STATE"
say "starting airlockd (log: $STATE/airlockd.log)"
$AIRLOCKD >"$STATE/airlockd.out" 2>"$STATE/airlockd.log" &
BROKER=$!
cleanup() {
    trap - EXIT INT TERM
    kill "$BROKER" 2>/dev/null || true
    wait "$BROKER" 2>/dev/null || true
    $AIRLOCKD stop-desktops >/dev/null 2>&1 || true
    echo "airlockd and its desktops stopped."
}
trap cleanup EXIT INT TERM

printf 'waiting for the pool'
for _ in $(seq 1 600); do
    if curl -sf "$URL/healthz" 2>/dev/null | grep -q '"clean":2'; then break; fi
    kill -0 "$BROKER" 2>/dev/null || { echo; tail -20 "$STATE/airlockd.log"; exit 1; }
    printf '.'; sleep 0.5
done
echo
curl -s "$URL/healthz"; echo
grep -E "template built|desktop started" "$STATE/airlockd.log" | sed 's/^/  /' | cut -c1-160 || true

say "a terminal leases a desktop (POST /v1/leases)"
LEASE_JSON=$(curl -s -X POST -H "Authorization: Bearer $AIRLOCK_TOKEN" -H 'Content-Type: application/json' \
    -d '{"user": "dr-demo"}' "$URL/v1/leases")
echo "$LEASE_JSON"
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)" <<<"$LEASE_JSON"; }
LEASE=$(field 'd["lease_id"]')
DESK=$(field 'd["desktop_id"]')
PORT=$(field 'd["display"]["port"]')
PASS=$(field 'd["display"]["password"]')
cat > build/demo.vv <<VV
[virt-viewer]
type=spice
host=127.0.0.1
port=$PORT
password=$PASS
title=Airlock $DESK
delete-this-file=1
VV

say "the terminal forwards the sample disc (161 MB, 256 MR images) into $DESK over USB"
SERIAL="$STATE/desktops/$DESK/run/serial.log"
: > /dev/null
START_LINES=$(wc -l < "$SERIAL" 2>/dev/null || echo 0)
target/release/airlock usb forward --broker "$URL" --lease "$LEASE" --iso build/discs/sample.iso \
    >"$STATE/forward.log" 2>&1 &
FWD=$!
printf 'waiting for the desktop to read the disc'
for _ in $(seq 1 600); do
    if tail -n +"$((START_LINES + 1))" "$SERIAL" 2>/dev/null | grep -q '^AIRLOCK-CD dev='; then break; fi
    kill -0 "$FWD" 2>/dev/null || { echo; cat "$STATE/forward.log"; exit 1; }
    printf '.'; sleep 0.5
done
echo
tail -n +"$((START_LINES + 1))" "$SERIAL" | grep '^AIRLOCK-CD' | grep -v '^AIRLOCK-CD-FILE' | sed 's/^/  guest: /'
echo "  guest listed $(tail -n +"$((START_LINES + 1))" "$SERIAL" | grep -c '^AIRLOCK-CD-FILE') files, e.g.:"
tail -n +"$((START_LINES + 1))" "$SERIAL" | grep '^AIRLOCK-CD-FILE' | sed -n '1,4p' | sed 's/^AIRLOCK-CD-FILE /    /'
EXPECTED=$(python3 -c "import json; print(json.load(open('build/discs/sample.files.json'))['sha256'])")
GOT=$(tail -n +"$((START_LINES + 1))" "$SERIAL" | grep '^AIRLOCK-CD dev=' | tail -1 | grep -oE 'sha256=[0-9a-f]+' | cut -d= -f2)
if [ "$GOT" = "$EXPECTED" ]; then
    echo "  sha256 of every file read in the desktop matches the disc image: $GOT"
else
    echo "  sha256 MISMATCH: desktop $GOT, expected $EXPECTED"
fi

say "the terminal releases the lease (DELETE /v1/leases/$LEASE); the desktop is reset"
kill "$FWD" 2>/dev/null || true
curl -s -X DELETE -H "Authorization: Bearer $AIRLOCK_TOKEN" "$URL/v1/leases/$LEASE"; echo
for _ in $(seq 1 200); do
    if curl -s -H 'Authorization: Bearer demo-admin' "$URL/v1/desktops" | python3 -c "
import json,sys
d=[x for x in json.load(sys.stdin)['desktops'] if x['id']=='$DESK'][0]
sys.exit(0 if d['state']=='clean' and d['resets']>=1 else 1)"; then break; fi
    sleep 0.1
done
curl -s -H 'Authorization: Bearer demo-admin' "$URL/v1/desktops" | python3 -c "
import json,sys
for d in json.load(sys.stdin)['desktops']:
    how = 'last reset' if d['resets'] else 'started'
    r = f\"{how} in {d['last_reset_s']:.3f} s by {d['last_reset_method']}\" if d['last_reset_s'] is not None else ''
    print(f\"  {d['id']}: {d['state']:9} resets={d['resets']} {r}\")"
target/release/airlockd --config "$CONFIG" audit verify | sed 's/^/  /'

cat <<NEXT

The pool keeps running. Next:
  web console        http://127.0.0.1:7480/   (admin token: demo-admin)
  lease a desktop    curl -s -X POST -H 'Authorization: Bearer demo-terminal' -H 'Content-Type: application/json' -d '{"user":"me"}' $URL/v1/leases
  see a desktop      remote-viewer FILE.vv  (type=spice, host, port and password from the lease; needs a graphical session)
  forward a disc     target/release/airlock usb forward --broker $URL --lease LEASE_ID --iso build/discs/sample-small.iso   (AIRLOCK_TOKEN=demo-terminal)
  metrics            curl -s $URL/metrics
  audit              target/release/airlockd --config $CONFIG audit tail -n 20
Press Ctrl-C to stop airlockd and its desktops.
NEXT
wait "$BROKER"
