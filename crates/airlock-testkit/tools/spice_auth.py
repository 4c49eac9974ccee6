#!/usr/bin/python3
"""Connect to a SPICE server with a real SPICE client library (spice-gtk's
SpiceClientGLib) and report whether the password opens the display.

usage: spice_auth.py HOST PORT PASSWORD
exit 0: the main channel opened (password accepted)
exit 2: authentication failed
exit 1: anything else (connection refused, timeout)
"""
import sys

import gi

gi.require_version("SpiceClientGLib", "2.0")
from gi.repository import GLib, GObject, SpiceClientGLib  # noqa: E402

host, port, password = sys.argv[1], sys.argv[2], sys.argv[3]
loop = GLib.MainLoop()
result = {"code": 1, "why": "timeout"}


def on_event(channel, event):
    E = SpiceClientGLib.ChannelEvent
    if event == E.OPENED:
        result.update(code=0, why="opened")
    elif event == E.ERROR_AUTH:
        result.update(code=2, why="authentication failed")
    else:
        result.update(code=1, why=f"channel event {event.value_nick}")
    loop.quit()


def on_new_channel(session, channel):
    if isinstance(channel, SpiceClientGLib.MainChannel):
        GObject.Object.connect(channel, "channel-event", on_event)


session = SpiceClientGLib.Session()
session.set_property("host", host)
session.set_property("port", port)
session.set_property("password", password)
GObject.Object.connect(session, "channel-new", on_new_channel)
GLib.timeout_add_seconds(10, loop.quit)
session.connect()
loop.run()
session.disconnect()
print(result["why"])
sys.exit(result["code"])
