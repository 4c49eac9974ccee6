#!/usr/bin/python3
"""A real SPICE client (spice-gtk's SpiceClientGLib) for tests: checks which
password opens a display, over plain TCP or TLS, and can stay connected like a
viewer and press keys on the desktop's keyboard.

usage: spice_client.py [--tls] [--ca-file FILE] [--host-subject SUBJECT]
                       [--hold] HOST PORT PASSWORD

Without --hold it connects, prints one line saying how the attempt ended and
exits:
  0  "opened": the main channel opened (the password was accepted)
  2  "refused": the server refused the password
  3  "tls-error: ...": the TLS handshake or the certificate check failed
  1  anything else ("failed: ...": connection refused or closed, timeout)
With --tls the client is given only a TLS port (SPICE `tls-port`), so every
channel is TLS; --ca-file is the CA it trusts, --host-subject the certificate
subject it expects (else it checks HOST against the certificate).

With --hold, once the main and inputs channels are open it prints "opened"
and stays connected, reading commands on stdin:
  key SCANCODE   press and release a key (PC AT set-1 scancode, e.g. 0x21 = F)
It prints "closed: WHY" and exits 0 when the server ends the session, and
disconnects and exits 0 at the end of stdin. A failed connection exits as
above.
"""
import argparse
import sys

import gi

gi.require_version("SpiceClientGLib", "2.0")
from gi.repository import GLib, GObject, SpiceClientGLib  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--tls", action="store_true")
parser.add_argument("--ca-file")
parser.add_argument("--host-subject")
parser.add_argument("--hold", action="store_true")
parser.add_argument("host")
parser.add_argument("port")
parser.add_argument("password")
args = parser.parse_args()

loop = GLib.MainLoop()
state = {"code": 1, "line": "failed: timeout", "main": False, "inputs": None, "held": False}
E = SpiceClientGLib.ChannelEvent


def say(line):
    print(line, flush=True)


def channel_error(channel):
    try:
        err = channel.get_error()
    except (AttributeError, TypeError):
        err = None
    return err.message if err is not None else "(see the library's warnings)"


def finish(code, line):
    state.update(code=code, line=line)
    loop.quit()


def maybe_opened():
    if state["main"] and state["inputs"] is not None and not state["held"]:
        state["held"] = True
        say("opened")
        GLib.io_add_watch(sys.stdin, GLib.IO_IN | GLib.IO_HUP, on_stdin)


def on_main_event(channel, event):
    if event == E.OPENED:
        if not args.hold:
            finish(0, "opened")
            return
        state["main"] = True
        maybe_opened()
    elif state["held"]:
        finish(0, f"closed: channel event {event.value_nick}")
    elif event == E.ERROR_AUTH:
        finish(2, "refused")
    elif event == E.ERROR_TLS:
        finish(3, f"tls-error: {channel_error(channel)}")
    else:
        finish(1, f"failed: channel event {event.value_nick}: {channel_error(channel)}")


def on_inputs_event(channel, event):
    if event == E.OPENED:
        state["inputs"] = channel
        maybe_opened()


def on_new_channel(session, channel):
    if isinstance(channel, SpiceClientGLib.MainChannel):
        GObject.Object.connect(channel, "channel-event", on_main_event)
    elif isinstance(channel, SpiceClientGLib.InputsChannel) and args.hold:
        # A viewer opens the channels it uses; this one has a keyboard.
        GObject.Object.connect(channel, "channel-event", on_inputs_event)
        SpiceClientGLib.Channel.connect(channel)


def on_stdin(source, condition):
    line = source.readline()
    if not line:
        finish(0, "closed: end of input")
        return False
    words = line.split()
    if len(words) == 2 and words[0] == "key":
        state["inputs"].key_press_and_release(int(words[1], 0))
        say(f"pressed {words[1]}")
    else:
        say(f"unknown command: {line.strip()}")
    return True


session = SpiceClientGLib.Session()
session.set_property("host", args.host)
if args.tls:
    session.set_property("tls-port", args.port)
else:
    session.set_property("port", args.port)
if args.ca_file:
    session.set_property("ca-file", args.ca_file)
if args.host_subject:
    # The session property behind the connection file's `host-subject`; setting it
    # makes the client check the certificate's subject instead of the host name.
    session.set_property("cert-subject", args.host_subject)
session.set_property("password", args.password)
GObject.Object.connect(session, "channel-new", on_new_channel)


def on_timeout():
    if not state["held"]:
        loop.quit()
    return False


GLib.timeout_add_seconds(15, on_timeout)
session.connect()
loop.run()
session.disconnect()
say(state["line"])
sys.exit(state["code"])
