"""fanout.integrations.django: real Django, a real sqlite file, real transactions, the real daemon.

Django's ORM refuses to run on a thread with a running event loop, so each piece of
Django code runs in a worker thread (asyncio.to_thread) while the test reads the
stream; each such piece closes its thread's database connection when done.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import django
import pytest
from django.conf import settings
from django.db import connection, transaction
from django.test import override_settings

from fanout.client import Publisher, PublishError
from fanout.integrations import close_process_publishers
from fanout.integrations import django as fanout_django
from tests.sse_client import SSEClient, subscribe

pytestmark = pytest.mark.integration

T = TypeVar("T")


class Boom(Exception):
    pass


@pytest.fixture(scope="module")
def orders_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("django") / "db.sqlite3"
    if not settings.configured:
        settings.configure(
            DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(path)}},
            INSTALLED_APPS=[],
        )
        django.setup()
    # settings.configure works once per process: one database for the whole test run.

    def create() -> None:
        with connection.cursor() as cursor:
            cursor.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT NOT NULL)")

    _closing(create)()
    return path


@pytest.fixture(autouse=True)
def _shared_publishers_closed() -> Iterator[None]:
    yield
    close_process_publishers()  # those get_publisher() opened on this test's daemon


def _closing(fn: Callable[[], T]) -> Callable[[], T]:
    def run() -> T:
        try:
            return fn()
        finally:
            connection.close()

    return run


async def in_django(fn: Callable[[], T]) -> T:
    return await asyncio.to_thread(_closing(fn))


def insert(item: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO orders (item) VALUES (%s)", [item])
        return int(cursor.lastrowid)


def items() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT item FROM orders ORDER BY id")
        return [row[0] for row in cursor.fetchall()]


async def orders_stream(daemon: Any) -> SSEClient:
    client = await subscribe(daemon.host, daemon.port, "/events?topic=orders")
    assert (await client.next()).event == "connected"
    return client


async def test_an_event_is_published_after_the_commit_and_not_before(daemon, orders_db):
    client = await orders_stream(daemon)
    publisher = Publisher(daemon.control)
    published_before = daemon.stats()["published"]

    def create_order() -> tuple[int, int]:
        with transaction.atomic():
            order_id = insert("book")
            fanout_django.publish_on_commit(
                "orders", {"id": order_id}, event="created", publisher=publisher
            )
            # Inside the transaction: registered, not sent.
            published_inside = publisher.stats()["published"]
        return order_id, published_inside

    order_id, published_inside = await in_django(create_order)
    assert published_inside == published_before
    event = await client.next()
    assert (event.event, event.json()) == ("created", {"id": order_id})
    # What the event announces is there for whoever reacts to it.
    assert "book" in await in_django(items)
    publisher.close()
    client.close()


async def test_a_rolled_back_transaction_publishes_nothing(daemon, orders_db):
    client = await orders_stream(daemon)
    publisher = Publisher(daemon.control)

    def fail_order() -> None:
        with transaction.atomic():
            insert("never")
            fanout_django.publish_on_commit("orders", {"item": "never"}, publisher=publisher)
            raise Boom

    with pytest.raises(Boom):
        await in_django(fail_order)
    assert "never" not in await in_django(items)
    # Events arrive in order: had the rollback published, it would come before this.
    daemon.publish("orders", "marker", event="marker")
    assert (await client.next()).event == "marker"
    publisher.close()
    client.close()


async def test_a_rolled_back_savepoint_drops_only_its_own_events(daemon, orders_db):
    client = await orders_stream(daemon)
    publisher = Publisher(daemon.control)

    def nested() -> None:
        with transaction.atomic():
            insert("outer")
            fanout_django.publish_on_commit("orders", "outer", publisher=publisher)
            try:
                with transaction.atomic():  # a savepoint
                    insert("inner")
                    fanout_django.publish_on_commit("orders", "inner", publisher=publisher)
                    raise Boom
            except Boom:
                pass
            fanout_django.notify_on_commit("nobody", "unrelated", publisher=publisher)
            fanout_django.broadcast_on_commit("after", event="bc", publisher=publisher)

    await in_django(nested)
    assert [(await client.next()).json() for _ in range(2)] == ["outer", "after"]
    stored = await in_django(items)
    assert "outer" in stored
    assert "inner" not in stored
    publisher.close()
    client.close()


async def test_without_a_transaction_it_publishes_at_once_on_the_settings_socket(daemon, orders_db):
    client = await orders_stream(daemon)

    def autocommit() -> None:
        with override_settings(FANOUT_SOCKET=daemon.control):
            assert not transaction.get_connection().in_atomic_block
            fanout_django.publish_on_commit("orders", {"n": 1}, event="now")

    await in_django(autocommit)
    event = await client.next()
    assert (event.event, event.json()) == ("now", {"n": 1})
    client.close()


async def test_data_that_cannot_be_encoded_fails_inside_the_transaction(daemon, orders_db):
    publisher = Publisher(daemon.control)

    def bad() -> None:
        with transaction.atomic():
            insert("unencodable")
            fanout_django.publish_on_commit("orders", {"x": object()}, publisher=publisher)

    with pytest.raises(TypeError):
        await in_django(bad)
    assert "unencodable" not in await in_django(items)
    with pytest.raises(ValueError, match="invalid topic"):
        fanout_django.publish_on_commit("no spaces", 1, publisher=publisher)
    publisher.close()


async def test_the_data_is_what_it_was_when_registered(daemon, orders_db):
    client = await orders_stream(daemon)
    publisher = Publisher(daemon.control)

    def mutate() -> None:
        data = {"status": "new"}
        with transaction.atomic():
            fanout_django.publish_on_commit("orders", data, publisher=publisher)
            data["status"] = "changed later"

    await in_django(mutate)
    assert (await client.next()).json() == {"status": "new"}
    publisher.close()
    client.close()


async def test_a_daemon_that_is_down_after_the_commit(daemon, orders_db, short_tmp, caplog):
    gone = Publisher(str(short_tmp / "no-daemon.sock"))

    def robust() -> None:
        with transaction.atomic():
            insert("kept")
            fanout_django.publish_on_commit("orders", 1, publisher=gone)

    with caplog.at_level(logging.WARNING, logger="fanout.integrations.django"):
        await in_django(robust)  # logged, not raised: the order is committed
    assert "kept" in await in_django(items)
    assert "publish after commit failed" in caplog.text
    assert "cannot reach fanout" in caplog.text

    def strict() -> None:
        with transaction.atomic():
            insert("also kept")
            fanout_django.publish_on_commit("orders", 1, publisher=gone, robust=False)

    with pytest.raises(PublishError, match="cannot reach fanout"):
        await in_django(strict)
    assert "also kept" in await in_django(items)  # raised after the commit, not instead
