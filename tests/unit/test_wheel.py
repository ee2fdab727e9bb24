import pytest

from fanout.wheel import Wheel


def test_fires_at_deadline_never_before():
    wheel = Wheel(tick_s=0.1, slots=8, now=0.0)
    wheel.schedule(1.0, "a")
    assert wheel.advance(0.95) == []
    assert wheel.advance(1.0) == ["a"]
    assert wheel.advance(5.0) == []
    assert len(wheel) == 0


def test_cancel():
    wheel = Wheel(tick_s=0.1, slots=8)
    t = wheel.schedule(0.5, "a")
    wheel.schedule(0.5, "b")
    wheel.cancel(t)
    wheel.cancel(t)  # twice is harmless
    assert len(wheel) == 1
    assert wheel.advance(1.0) == ["b"]


def test_deadlines_beyond_one_lap_wait_their_round():
    wheel = Wheel(tick_s=1.0, slots=4, now=0.0)
    wheel.schedule(2.0, "near")
    wheel.schedule(6.0, "far")  # same slot as 2.0, one lap later
    assert wheel.advance(2.0) == ["near"]
    assert wheel.advance(5.0) == []
    assert wheel.advance(6.0) == ["far"]


def test_past_deadline_fires_on_next_advance():
    wheel = Wheel(tick_s=0.5, slots=8, now=10.0)
    wheel.schedule(3.0, "late")
    assert wheel.advance(10.5) == ["late"]


def test_big_jump_visits_every_slot_once():
    wheel = Wheel(tick_s=0.1, slots=16, now=0.0)
    items = [f"i{n}" for n in range(100)]
    for n, item in enumerate(items):
        wheel.schedule(n * 0.37, item)
    assert sorted(wheel.advance(1000.0)) == sorted(items)
    assert len(wheel) == 0


def test_many_small_steps_expire_in_deadline_order():
    wheel = Wheel(tick_s=0.25, slots=32, now=0.0)
    deadlines = {f"t{n}": (n * 7919 % 997) / 10 for n in range(200)}
    for item, deadline in deadlines.items():
        wheel.schedule(deadline, item)
    now, fired = 0.0, {}
    while len(fired) < len(deadlines):
        now += 0.25
        for item in wheel.advance(now):
            fired[item] = now
    for item, at in fired.items():
        assert deadlines[item] <= at < deadlines[item] + 0.25 + 1e-9


def test_rejects_bad_parameters():
    with pytest.raises(ValueError, match="tick_s"):
        Wheel(tick_s=0)
