"""Every worker's connections, as the supervisor sees them, sans-IO.

Workers ask before they admit a connection, so the global cap and the per-user
limits hold across processes; the counts here also answer `sent` and /stats.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from .admission import Decision, decide
from .config import Limits
from .route import Route


@dataclass(slots=True)
class Conn:
    worker: int
    id: str
    user: str | None
    topics: frozenset[str]


class Registry:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.draining = False
        self._conns: dict[str, Conn] = {}
        # Insertion order is connection order: evict-oldest takes the first.
        self._by_user: dict[str, dict[str, Conn]] = {}
        self._topics: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._conns)

    def decide(self, user: str | None) -> Decision[Conn]:
        """The verdict for one more connection of `user` (None: the cap alone)."""
        older = list(self._by_user.get(user, {}).values()) if user is not None else []
        return decide(self.limits, self.draining, len(self._conns), older)

    def admit(
        self, worker: int, conn_id: str, user: str | None, topics: frozenset[str]
    ) -> Decision[Conn]:
        """Decide and, when admitted, count it; the evicted ones are forgotten here
        (the caller ends them in their workers)."""
        decision = self.decide(user)
        if decision.refusal is None:
            for old in decision.evict:
                self.remove(old.id)
            self.add(worker, conn_id, user, topics)
        return decision

    def add(self, worker: int, conn_id: str, user: str | None, topics: frozenset[str]) -> None:
        conn = Conn(worker, conn_id, user, topics)
        self._conns[conn_id] = conn
        if user is not None:
            self._by_user.setdefault(user, {})[conn_id] = conn
        self._topics.update(topics)

    def remove(self, conn_id: str) -> Conn | None:
        conn = self._conns.pop(conn_id, None)
        if conn is None:
            return None
        if conn.user is not None:
            user_conns = self._by_user[conn.user]
            del user_conns[conn_id]
            if not user_conns:
                del self._by_user[conn.user]
        self._topics.subtract(conn.topics)
        for topic in conn.topics:
            if self._topics[topic] <= 0:
                del self._topics[topic]
        return conn

    def remove_worker(self, worker: int) -> list[str]:
        gone = [c.id for c in self._conns.values() if c.worker == worker]
        for conn_id in gone:
            self.remove(conn_id)
        return gone

    def get(self, conn_id: str) -> Conn | None:
        return self._conns.get(conn_id)

    def count_for(self, route: Route) -> int:
        """How many connections an event on `route` reaches (fanout.route's rule)."""
        kind = route.kind
        if kind == "topic":
            return self._topics.get(route.key, 0)
        if kind == "all":
            return len(self._conns)
        if kind == "conn":
            return 1 if route.key in self._conns else 0
        conns = self._by_user.get(route.key, {}).values()
        return sum(1 for c in conns if route.reaches(c.topics, c.user))

    def counts(self) -> dict[str, int]:
        return {
            "connections": len(self._conns),
            "users": len(self._by_user),
            "topics": len(self._topics),
        }
