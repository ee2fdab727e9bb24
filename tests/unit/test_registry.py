from fanout.config import Limits
from fanout.registry import Registry
from fanout.route import Route


def test_per_user_limit_holds_across_workers():
    reg = Registry(Limits(max_connections_per_user=2))
    assert reg.admit(1, "c1", "u", frozenset({"a"})).refusal is None
    assert reg.admit(2, "c2", "u", frozenset({"a"})).refusal is None
    refusal = reg.admit(1, "c3", "u", frozenset({"a"})).refusal
    assert refusal is not None
    assert refusal.status == 429
    assert reg.count_for(Route("user", "u")) == 2
    reg.remove("c1")
    assert reg.admit(2, "c3", "u", frozenset()).refusal is None


def test_evict_oldest_names_the_connection_and_its_worker():
    reg = Registry(Limits(max_connections_per_user=2, per_user_policy="evict-oldest"))
    reg.admit(1, "c1", "u", frozenset())
    reg.admit(2, "c2", "u", frozenset())
    decision = reg.admit(2, "c3", "u", frozenset())
    assert decision.refusal is None
    assert [(c.worker, c.id) for c in decision.evict] == [(1, "c1")]
    assert reg.count_for(Route("user", "u")) == 2
    assert reg.get("c1") is None


def test_global_cap_and_draining():
    reg = Registry(Limits(max_connections=2))
    reg.admit(1, "c1", None, frozenset())
    reg.admit(2, "c2", None, frozenset())
    refusal = reg.admit(1, "c3", None, frozenset()).refusal
    assert refusal is not None
    assert refusal.status == 503
    reg.remove("c2")
    reg.draining = True
    refusal = reg.admit(1, "c3", None, frozenset()).refusal
    assert refusal is not None
    assert refusal.reason == "shutting down"


def test_counts_for_sent_and_a_dead_worker():
    reg = Registry(Limits())
    reg.admit(1, "c1", "u", frozenset({"a", "b"}))
    reg.admit(2, "c2", "v", frozenset({"a"}))
    reg.admit(2, "c3", "u", frozenset({"b"}))
    assert reg.count_for(Route("topic", "a")) == 2
    assert reg.count_for(Route("user", "u", "b")) == 2
    assert reg.count_for(Route("user", "u", "a")) == 1
    assert reg.count_for(Route("user", "u")) == 2
    assert reg.count_for(Route("all", "")) == 3
    assert reg.count_for(Route("conn", "c2")) == 1
    assert reg.counts() == {"connections": 3, "users": 2, "topics": 2}
    assert reg.remove_worker(2) == ["c2", "c3"]
    assert reg.counts() == {"connections": 1, "users": 1, "topics": 2}
    assert reg.count_for(Route("topic", "a")) == 1
    assert reg.remove("nope") is None
