#!/usr/bin/env bash
# Sets up this machine and runs the Airlock demo: a 2-desktop pool of the demo guest
# serving the API on 127.0.0.1:7480 (examples/demo.toml), then the clinician's session:
# `airlock open` with the 161 MB sample referral disc shows the desktop in remote-viewer
# (under Xvfb with a screenshot in build/ when there is no X display), the desktop reads
# the disc, and the session's end releases and resets it. The broker keeps running until
# Ctrl-C.
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

# The clinician's view: `airlock open` with the sample disc. With an X display the desktop
# appears in remote-viewer; without one, the same runs under Xvfb and a screenshot of what
# the clinician would see is saved.
TERM_DIR=build/demo-terminal
mkdir -p "$TERM_DIR"
( umask 077; echo "$AIRLOCK_TOKEN" > "$TERM_DIR/token" )
cat > "$TERM_DIR/terminal.toml" <<TOML
[broker]
url = "$URL"
token_file = "$ROOT/$TERM_DIR/token"
[session]
user = "dr-demo"
[display]
mode = "window"
TOML
XVFB=""
if [ -z "${DISPLAY:-}" ]; then
    for n in $(seq 90 139); do [ -e "/tmp/.X11-unix/X$n" ] || break; done
    Xvfb ":$n" -screen 0 1280x800x24 -nolisten tcp >/dev/null 2>&1 &
    XVFB=$!
    export DISPLAY=":$n"
    for _ in $(seq 1 100); do [ -e "/tmp/.X11-unix/X$n" ] && break; sleep 0.1; done
    echo "  (no X display: running the viewer under Xvfb $DISPLAY)"
fi

say "the clinician opens the disc: airlock open --iso build/discs/sample.iso (161 MB, 256 MR images)"
declare -A LINES0
for d in desk-01 desk-02; do
    LINES0[$d]=$(wc -l < "$STATE/desktops/$d/run/serial.log" 2>/dev/null || echo 0)
done
target/release/airlock open --config "$TERM_DIR/terminal.toml" --iso build/discs/sample.iso \
    >"$STATE/open.log" 2>&1 &
OPEN=$!
for _ in $(seq 1 600); do
    grep -q 'is yours' "$STATE/open.log" 2>/dev/null && break
    kill -0 "$OPEN" 2>/dev/null || { cat "$STATE/open.log"; exit 1; }
    sleep 0.1
done
DESK=$(grep -oE 'Desktop desk-[0-9]+' "$STATE/open.log" | head -1 | cut -d' ' -f2)
SERIAL="$STATE/desktops/$DESK/run/serial.log"
START_LINES=${LINES0[$DESK]}
printf 'waiting for the desktop to read the disc'
for _ in $(seq 1 600); do
    if tail -n +"$((START_LINES + 1))" "$SERIAL" 2>/dev/null | grep -q '^AIRLOCK-CD dev='; then break; fi
    kill -0 "$OPEN" 2>/dev/null || { echo; cat "$STATE/open.log"; exit 1; }
    printf '.'; sleep 0.5
done
echo
sed 's/^/  airlock open: /' "$STATE/open.log" | grep -v 'read by the desktop so far' | head -12
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
if [ -n "$XVFB" ]; then
    sleep 2
    import -display "$DISPLAY" -window root build/demo-screenshot.png
    echo "  what the clinician sees: build/demo-screenshot.png"
    say "the session ends (SIGTERM to airlock open): the drive is unplugged, the desktop released and reset"
    kill -TERM "$OPEN"
else
    say "close the desktop's window to end the session; the desktop is then released and reset"
fi
wait "$OPEN" || true
tail -1 "$STATE/open.log" | sed 's/^/  airlock open: /'
[ -z "$XVFB" ] || kill "$XVFB" 2>/dev/null || true
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
  web console        http://127.0.0.1:7480/console   (account: token, password: demo-admin)
  open a disc        target/release/airlock open --config $TERM_DIR/terminal.toml --iso build/discs/sample-small.iso
  lease by hand      curl -s -X POST -H 'Authorization: Bearer demo-terminal' -H 'Content-Type: application/json' -d '{"user":"me"}' $URL/v1/leases
  metrics            curl -s $URL/metrics
  audit              target/release/airlockd --config $CONFIG audit tail -n 20
Press Ctrl-C to stop airlockd and its desktops.
NEXT
wait "$BROKER"
