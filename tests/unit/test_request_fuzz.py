"""The public request path under arbitrary bytes (hypothesis, bounded in time): the
whole input, one byte at a time and in random splits, through the real subscriber
protocol and parser. No exception escapes; every answer is a stream, a 4xx, or a close."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fanout.access import Policy
from fanout.config import Config, Limits
from fanout.gates import LocalGate
from fanout.ipguard import IpGuard
from fanout.protocol import Shared, SubscriberProtocol, TimerTarget
from fanout.wheel import Wheel
from tests.unit.node import Node
from tests.unit.test_hub import Clock, FakeTransport


class PeerTransport(FakeTransport):
    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default


def shared_for(node: Node, clock: Clock) -> Shared:
    limits = Limits(max_header_bytes=1024)
    return Shared(
        core=node.core,
        gate=LocalGate(node.core),
        wheel=Wheel[TimerTarget](0.1, 64, clock.now),
        clock=clock,
        max_header_bytes=limits.max_header_bytes,
        header_timeout_s=1.0,
        heartbeat_interval_s=15.0,
        max_topics=4,
        send_buffer_bytes=0,
        connections=set(),
        max_open=100,
        ipguard=IpGuard(0, 0, 1, 64, clock),
        retry_after_s=5,
    )


REQUEST_LIKE = st.one_of(
    st.binary(max_size=600),
    st.builds(
        lambda method, target, headers, tail: (
            method + b" " + target + b" HTTP/1.1\r\n" + b"".join(headers) + b"\r\n" + tail
        ),
        st.sampled_from([b"GET", b"POST", b"OPTIONS", b"HEAD", b"G\x00T", b""]),
        st.one_of(
            st.sampled_from([b"/events?topic=a", b"/events?topic=%ff", b"/fanout.js", b"/x"]),
            st.binary(max_size=80),
        ),
        st.lists(
            st.one_of(
                st.sampled_from(
                    [
                        b"Host: x\r\n",
                        b"Last-Event-ID: e-1\r\n",
                        b"Last-Event-ID: \xff\xfe\r\n",
                        b"Origin: http://elsewhere\r\n",
                        b"Authorization: Bearer abc\r\n",
                        b"Content-Length: 5\r\n",
                        b"Transfer-Encoding: chunked\r\n",
                    ]
                ),
                st.binary(max_size=60).map(lambda b: b + b"\r\n"),
            ),
            max_size=6,
        ),
        st.binary(max_size=40),
    ),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(REQUEST_LIKE, st.lists(st.integers(1, 50), max_size=20), st.booleans())
def test_arbitrary_bytes_get_a_stream_a_4xx_or_a_close(data, cuts, bytewise):
    clock = Clock()
    node = Node(clock, Config().limits)
    proto = SubscriberProtocol(shared_for(node, clock), Policy().for_listener(trusted=False))
    transport = PeerTransport()
    proto.connection_made(transport)  # type: ignore[arg-type]
    pieces: list[bytes] = []
    if bytewise:
        pieces = [data[i : i + 1] for i in range(len(data))]
    else:
        at = 0
        for cut in cuts:
            pieces.append(data[at : at + cut])
            at += cut
        pieces.append(data[at:])
    for piece in pieces:
        proto.data_received(piece)
    proto.eof_received()
    out = bytes(transport.data)
    if out:
        assert out.startswith(b"HTTP/1.1 "), out[:60]
        status = int(out[9:12])
        assert status < 500, out[:80]
        if status != 200 or b"text/event-stream" not in out.split(b"\r\n\r\n", 1)[0]:
            assert transport.closed or transport.aborted
    proto.connection_lost(None)
    assert node.connections == 0
