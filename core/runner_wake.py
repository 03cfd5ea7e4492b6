"""Wake the embedded runner as soon as a flow run is created, instead of at its next poll.

Prefect's runner finds new flow runs by polling the Prefect API. Polling fast makes map jobs start sooner
but keeps the Prefect server busy for nothing between jobs (it competes with the tile renders on a small
machine); polling slowly delays every job. So ``core.launch`` sends a one-byte datagram to the runner
right after creating a flow run, and the runner polls at once: the job starts within milliseconds of
``POST /create`` and the regular poll (``GEOEXPORT_RUNNER_POLL_SECONDS``) is only a fallback.

The socket is a Linux abstract Unix datagram socket named after the resolved ``GEOEXPORT_VAR_DIR``: no
file, no port, reachable only by processes of this machine that share the stack's var dir. Sending never
blocks and never fails a launch: when no runner listens (workers of a work pool, another OS, a second
runner on the same var dir) the datagram is dropped and the poll picks the run up.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

log = logging.getLogger("geoexport.runner_wake")


def address(var_dir: Path) -> str | None:
    """The wake socket's abstract address for a var dir (``None`` where abstract sockets do not exist)."""
    if not sys.platform.startswith("linux"):
        return None
    digest = hashlib.sha256(str(Path(var_dir).resolve()).encode()).hexdigest()[:24]
    return f"\0geoexport-runner-{digest}"


def wake(var_dir: Path) -> bool:
    """Tell the runner of ``var_dir`` to poll now; ``True`` if a runner received it."""
    addr = address(var_dir)
    if addr is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            sock.sendto(b"w", addr)
        return True
    except OSError:  # nobody listens (ECONNREFUSED/ENOENT) or its queue is full (EAGAIN): it will poll
        return False


class _Waker(asyncio.DatagramProtocol):
    """Runs ``poll`` once per burst of wake-ups: a wake-up during a poll makes one more poll after it."""

    def __init__(self, poll: Callable[[], Awaitable[None]]) -> None:
        self.poll = poll
        self.busy = False
        self.again = False
        self.task: asyncio.Task[None] | None = None

    def datagram_received(self, data: bytes, addr: object) -> None:
        if self.busy:
            self.again = True
            return
        self.busy = True
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            while True:
                self.again = False
                try:
                    await self.poll()
                except Exception:  # noqa: BLE001 - the regular poll is still there
                    log.exception("poll on wake-up failed")
                if not self.again:
                    return
        finally:
            self.busy = False


@contextlib.asynccontextmanager
async def listening(var_dir: Path, poll: Callable[[], Awaitable[None]]) -> AsyncIterator[bool]:
    """While inside, call ``poll`` whenever :func:`wake` is sent for ``var_dir``; yields whether it listens."""
    addr = address(var_dir)
    sock = None
    if addr is not None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind(addr)
        except OSError as exc:  # another runner of the same var dir has it: this one only polls
            log.warning("runner wake-up socket unavailable (%s); polling only", exc)
            sock.close()
            sock = None
    if sock is None:
        yield False
        return
    sock.setblocking(False)
    transport, protocol = await asyncio.get_running_loop().create_datagram_endpoint(lambda: _Waker(poll), sock=sock)
    try:
        yield True
    finally:
        transport.close()
        if protocol.task is not None and not protocol.task.done():
            protocol.task.cancel()
        await asyncio.sleep(0)  # the transport closes its socket on the loop's next turn: unbound on return
