"""Every worker's connections, as the supervisor sees them, sans-IO.

Workers ask before they admit a connection, so the global cap and the per-user
limits hold across processes; the counts here also answer `sent` and /stats.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from .config import Limits
from .hub import Refusal, refusal_for


@dataclass(slots=True)
class Conn:
    worker: int
    id: str
    user: str | None
    topics: frozenset[str]


@dataclass(slots=True)
class Decision:
    refusal: Refusal | None
    evict: list[Conn] = field(default_factory=list)


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

    def admit(
        self, worker: int, conn_id: str, user: str | None, topics: frozenset[str]
    ) -> Decision:
        user_conns = self._by_user.get(user, {}) if user is not None else {}
        refusal = refusal_for(self.limits, self.draining, len(self._conns), len(user_conns))
        if refusal is not None:
            return Decision(refusal)
        evict = []
        while len(user_conns) >= self.limits.max_connections_per_user:
            oldest = next(iter(user_conns.values()))
            self.remove(oldest.id)
            evict.append(oldest)
        conn = Conn(worker, conn_id, user, topics)
        self._conns[conn_id] = conn
        if user is not None:
            self._by_user.setdefault(user, {})[conn_id] = conn
        self._topics.update(topics)
        return Decision(None, evict)

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

    def remove_worker(self, worker: int) -> int:
        gone = [c.id for c in self._conns.values() if c.worker == worker]
        for conn_id in gone:
            self.remove(conn_id)
        return len(gone)

    def get(self, conn_id: str) -> Conn | None:
        return self._conns.get(conn_id)

    def on_topic(self, topic: str, user: str | None = None) -> int:
        if user is None:
            return self._topics.get(topic, 0)
        return sum(1 for c in self._by_user.get(user, {}).values() if topic in c.topics)

    def of_user(self, user: str) -> int:
        return len(self._by_user.get(user, {}))

    def counts(self) -> dict[str, int]:
        return {
            "connections": len(self._conns),
            "users": len(self._by_user),
            "topics": len(self._topics),
        }
