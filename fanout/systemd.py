"""sd_notify without libsystemd: tell the service manager about the daemon's life.

Under `Type=notify` systemd passes a datagram socket in `NOTIFY_SOCKET` and waits
for `READY=1` before it counts the service as started (so `systemctl start` returns
once the listeners accept, and units ordered after fanout start after that). The
protocol is one datagram of newline-separated `KEY=VALUE` lines (sd_notify(3)), so
a dozen lines here beat a dependency on libsystemd or a binding to it.

Without `NOTIFY_SOCKET` (not under systemd, or another Type=) every call is a
no-op. A failure to notify is logged once and never stops the daemon: the service
manager then times the start out, which says more than a crash would.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger("fanout.systemd")

_warned = False


def socket_address(value: str) -> str | None:
    """NOTIFY_SOCKET -> an AF_UNIX address; '@name' is Linux's abstract namespace.

    Returns None for schemes this module does not speak (systemd also knows
    `vsock:` addresses, for VMs; those need AF_VSOCK).
    """
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None


def notify(*fields: str) -> bool:
    """Send `fields` ("READY=1", "STATUS=...") as one datagram; True if sent."""
    global _warned
    value = os.environ.get("NOTIFY_SOCKET")
    if not value:
        return False
    address = socket_address(value)
    if address is None:
        if not _warned:
            _warned = True
            log.warning("NOTIFY_SOCKET=%s: unsupported address, not notifying systemd", value)
        return False
    message = "\n".join(fields).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message)
    except OSError as exc:
        if not _warned:
            _warned = True
            log.warning("cannot notify systemd at %s: %s", value, exc.strerror or exc)
        return False
    return True


def ready(status: str = "") -> bool:
    fields = ["READY=1"]
    if status:
        fields.append(f"STATUS={status}")
    return notify(*fields)


def reloading() -> bool:
    # systemd >= 253 wants the CLOCK_MONOTONIC time with RELOADING=1 (it is how
    # Type=notify-reload tells this reload from an earlier one); older ones ignore it.
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading configuration")


def stopping() -> bool:
    return notify("STOPPING=1", "STATUS=draining connections")
