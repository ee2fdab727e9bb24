"""The control socket as HTTP/1.1 clients expect it (curl, http.client), on the real daemon.

Every malformed or refused request gets a 4xx that names the problem, or a clean
close; nothing after a request that ends the connection is run; nothing is logged
above info for a bad client.
"""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import subprocess
import time

import pytest

pytestmark = pytest.mark.integration

PUBLISH = b'{"topic": "t", "data": %d}'


def raw(daemon, data: bytes | list[bytes], *, timeout: float = 5.0) -> bytes:
    """Send bytes (a list: one send each) on a fresh connection, read until it closes
    or nothing more comes for a moment after the last answer."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(daemon.control)
        for piece in data if isinstance(data, list) else [data]:
            s.sendall(piece)
        s.shutdown(socket.SHUT_WR)  # the daemon answers what it read, then closes
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def responses(data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Split a byte stream of responses that all carry Content-Length."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, data[:200]
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        length = int(headers.get("content-length", "0"))
        out.append((status, headers, rest[:length]))
        data = rest[length:]
    return out


def post(body: bytes, extra: str = "", path: str = "/publish") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=5)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


def quiet_log(daemon) -> None:
    bad = [
        line
        for line in daemon.log.splitlines()
        if " ERROR " in line or " WARNING " in line or " CRITICAL " in line
    ]
    assert not bad, bad
    assert "Traceback" not in daemon.log


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_large_body_gets_100_continue_at_once(daemon):
    # curl sends `Expect: 100-continue` for large bodies (over 1 KiB or 1 MiB,
    # depending on its version; asked for here) and waits up to 1 s for the interim
    # answer before sending the body anyway.
    body = json.dumps({"topic": "t", "data": "x" * 4000})
    started = time.monotonic()
    proc = subprocess.run(
        [
            *("curl", "-sS", "-v", "--unix-socket", daemon.control),
            *("-H", "Expect: 100-continue", "-d", body, "http://x/publish"),
        ],
        capture_output=True,
        text=True,
        timeout=20,
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    assert "Expect: 100-continue" in proc.stderr
    assert "HTTP/1.1 100 Continue" in proc.stderr
    assert json.loads(proc.stdout)["id"]
    # Without the 100, curl's expect timeout (1 s) would show here.
    assert elapsed < 0.9, elapsed


def test_100_continue_comes_before_the_body_is_sent(daemon):
    body = PUBLISH % 1
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(daemon.control)
        head = post(body, "Expect: 100-continue\r\n")[: -len(body)]
        s.sendall(head)
        assert s.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(body)
        status, _, answer = responses(s.recv(4096))[0]
    assert status == 200
    assert json.loads(answer)["sent"] == 0


def test_expect_with_a_body_too_large_gets_413_instead_of_100(start_daemon):
    daemon = start_daemon({"control": {"max_body_bytes": 4096}})
    head = b"POST /publish HTTP/1.1\r\nContent-Length: 50000\r\nExpect: 100-continue\r\n\r\n"
    [(status, headers, answer)] = responses(raw(daemon, head))
    assert status == 413
    assert "max_body_bytes" in json.loads(answer)["error"]
    assert headers["connection"] == "close"


def test_unknown_expectation_is_417(daemon):
    [(status, _, answer)] = responses(raw(daemon, post(PUBLISH % 1, "Expect: magic\r\n")))
    assert status == 417
    assert "Expect" in json.loads(answer)["error"]


def test_content_length_with_transfer_encoding_is_refused_and_closes(daemon):
    # RFC 9112 6.1: a smuggling attempt. The second "request" hidden after the body
    # must not be run.
    body = b'0\r\n\r\nPOST /publish HTTP/1.1\r\nContent-Length: 25\r\n\r\n{"topic": "t", "data": 1}'
    smuggle = (
        b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n%s" % (len(body), body)
    )
    got = responses(raw(daemon, smuggle))
    assert [status for status, _, _ in got] == [400]
    _, headers, answer = got[0]
    assert "Transfer-Encoding" in json.loads(answer)["error"]
    assert headers["connection"] == "close"
    assert daemon.stats()["published"] == 0
    quiet_log(daemon)


@pytest.mark.parametrize("pieces", [1, 40])
def test_header_block_over_the_limit_is_431_in_one_read_or_many(daemon, pieces):
    request = b"GET /stats HTTP/1.1\r\nHost: x\r\nX-Big: " + b"y" * 20_000 + b"\r\n\r\n"
    step = len(request) // pieces + 1
    got = responses(raw(daemon, [request[i : i + step] for i in range(0, len(request), step)]))
    assert [status for status, _, _ in got] == [431]
    assert "larger than" in json.loads(got[0][2])["error"]


def test_many_small_headers_over_the_limit_are_431(daemon):
    headers = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 50) for i in range(400))
    got = responses(raw(daemon, b"GET /stats HTTP/1.1\r\n" + headers + b"\r\n"))
    assert [status for status, _, _ in got] == [431]


def test_deeply_nested_json_is_400_saying_why_and_logs_nothing(daemon):
    body = b'{"topic": "t", "data": ' + b"[" * 1000 + b"]" * 1000 + b"}"
    for _ in range(3):
        [(status, _, answer)] = responses(raw(daemon, post(body)))
        assert status == 400
        assert "nested deeper" in json.loads(answer)["error"]
    ndjson = b'{"topic": "t", "data": ' + b"[" * 5000 + b"]" * 5000 + b"}\n"
    got = responses(raw(daemon, post(ndjson).replace(b"application/json", b"application/x-ndjson")))
    assert got[0][0] == 400
    assert "line 1" in json.loads(got[0][2])["error"]
    assert daemon.stats()["published"] == 0
    quiet_log(daemon)


def test_chunked_request_body_is_published(daemon):
    conn = UnixHTTPConnection(daemon.control)
    body = [b'{"topic": "t", ', b'"data": {"chunked": ', b"true}}"]
    conn.request(
        "POST",
        "/publish",
        body=iter(body),
        headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        encode_chunked=True,
    )
    response = conn.getresponse()
    assert response.status == 200, response.read()
    assert json.loads(response.read())["id"]
    conn.close()
    assert daemon.stats()["published"] == 1


def test_pipelined_requests_are_answered_in_order(daemon):
    n = 50
    burst = b"".join(post(PUBLISH % i) for i in range(n)) + b"GET /healthz HTTP/1.1\r\n\r\n"
    got = responses(raw(daemon, burst))
    assert len(got) == n + 1
    ids = [json.loads(answer)["id"] for _, _, answer in got[:n]]
    seqs = [int(i.rsplit("-", 1)[1]) for i in ids]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == n
    assert json.loads(got[-1][2]) == {"status": "ok"}


def test_a_bad_request_in_a_pipeline_ends_it_after_the_good_ones(daemon):
    burst = post(PUBLISH % 1) + b"BAD REQUEST LINE\r\n\r\n" + post(PUBLISH % 2)
    got = responses(raw(daemon, burst))
    assert [status for status, _, _ in got] == [200, 400]
    assert "malformed request" in json.loads(got[1][2])["error"]
    assert daemon.stats()["published"] == 1


def test_head_answers_the_length_without_the_body(daemon):
    got = raw(daemon, b"HEAD /healthz HTTP/1.1\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n")
    head, _, rest = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    assert length > 0
    assert rest.startswith(b"HTTP/1.1 200")  # no body after HEAD's head
    assert rest.endswith(b'{"status":"ok"}\n')


def test_keep_alive_then_connection_close(daemon):
    conn = UnixHTTPConnection(daemon.control)
    for i in range(3):
        conn.request(
            "POST", "/publish", body=PUBLISH % i, headers={"Content-Type": "application/json"}
        )
        response = conn.getresponse()
        assert response.status == 200
        assert not response.will_close
        response.read()
    conn.request("GET", "/healthz", headers={"Connection": "close"})
    response = conn.getresponse()
    assert response.status == 200
    assert response.getheader("Connection") == "close"
    assert response.will_close
    response.read()
    conn.close()
    # And the daemon closes its end by itself (no shutdown from the client here).
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(daemon.control)
        s.sendall(b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    assert [status for status, _, _ in responses(data)] == [200]


def test_nothing_after_connection_close_is_run(daemon):
    burst = post(PUBLISH % 1, "Connection: close\r\n") + post(PUBLISH % 2)
    got = responses(raw(daemon, burst))
    assert [status for status, _, _ in got] == [200]
    assert daemon.stats()["published"] == 1


def test_http_1_0_client(daemon):
    got = responses(raw(daemon, b"GET /healthz HTTP/1.0\r\n\r\nGET /healthz HTTP/1.0\r\n\r\n"))
    assert len(got) == 1  # 1.0 without keep-alive: one answer, then closed
    assert got[0][1]["connection"] == "close"
    kept = raw(
        daemon,
        b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
        b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    )
    got = responses(kept)
    assert len(got) == 2
    assert all(headers["connection"] == "keep-alive" for _, headers, _ in got)


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /healthz HTTP/1.1\r\nContent-Length: x\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx", 400),
        (b"POST /publish HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        (b"GET /healthz HTTP/9.9\r\n\r\n", 400),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400),  # a TLS hello
        (b"GET /he\x00lthz HTTP/1.1\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.1\r\nBad Header\r\n\r\n", 400),
    ],
)
def test_malformed_requests_get_a_4xx_naming_it_then_close(daemon, request_bytes, status):
    got = responses(raw(daemon, request_bytes))
    assert [s for s, _, _ in got] == [status]
    assert json.loads(got[0][2])["error"].startswith("malformed request")
    quiet_log(daemon)
