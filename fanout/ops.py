"""The ops publisher: runs inside the daemon when `[ops] enabled = true`.

Like the demo, it publishes through the real control socket with AsyncPublisher:
every `interval_s` it reads the /stats snapshot and publishes it to the `fanout:ops`
topic, which the live page at /ops follows with EventSource. The page computes rates
from consecutive counters and their publish times, so nothing is added to the hot
path, and what the page shows is what /stats and /metrics say.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time

from .client import AsyncPublisher, PublishError
from .config import Config, Ops
from .pages import Pages

log = logging.getLogger("fanout.ops")

OPS_TOPIC = "fanout:ops"
OPS_EVENT = "stats"


class OpsPublisher:
    def __init__(self, socket_path: str, settings: Ops) -> None:
        self._publisher = AsyncPublisher(socket_path)
        self._settings = settings
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._publisher.close()

    async def publish_once(self) -> None:
        stats = await self._publisher.stats()
        # `at` is when the snapshot was read: rates are differences over it, so a
        # late tick does not show as a dip.
        # `source` tells daemons apart where several publish to the topic (hosts on
        # one Redis backplane): the page tracks each and adds them up.
        data = {
            "at": time.time(),
            "interval_s": self._settings.interval_s,
            "source": f"{socket.gethostname()}/{stats.get('pid')}",
            "stats": stats,
        }
        await self._publisher.publish(OPS_TOPIC, data, event=OPS_EVENT)

    async def _run(self) -> None:
        while True:
            try:
                await self.publish_once()
            except (PublishError, OSError, TimeoutError) as exc:
                log.debug("ops snapshot not published: %s", exc)
            await asyncio.sleep(self._settings.interval_s)


def start_ops(config: Config, pages: Pages, publish: bool = True) -> OpsPublisher:
    """Serve /ops and start publishing the snapshots; call once the daemon is up.

    `publish=False` (workers other than the first): the page only, so each snapshot,
    which covers all workers, is published once.
    """
    ops = OpsPublisher(config.control.socket, config.ops)
    pages.ops = True
    if publish:
        ops.start()
    log.info("ops page at /ops on the public listeners")
    return ops
