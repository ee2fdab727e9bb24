"""Settings: `config.toml` -> typed, frozen, validated structs.

Every setting is declared once, here, with its default. msgspec refuses unknown keys,
wrong types and out-of-range values, and its messages name the path of the key
("Expected `int` >= 1 - at `$.limits.max_connections`"), which `load` prefixes with
the file name so a bad config is one readable line.
"""

from __future__ import annotations

import os
import re
import tomllib
from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct

from . import grants, tokens
from .cors import check_origin

PositiveInt = Annotated[int, Meta(ge=1)]
Seconds = Annotated[float, Meta(gt=0, le=86_400)]
FileMode = Annotated[int, Meta(ge=0, le=0o777)]
LogLevel = Literal["debug", "info", "warning", "error", "critical"]


class ConfigError(Exception):
    """A config file that cannot be used; the message is one line, for the user."""


class Listener(Struct, frozen=True, forbid_unknown_fields=True):
    """One public listener for subscribers: a TCP address or a Unix socket path."""

    # "HOST:PORT"; port 0 picks a free port (tests read it back from /stats).
    tcp: str = ""
    unix: str = ""
    # Unix socket listeners are usually nginx's upstream; 0o666 lets nginx's worker
    # user connect. Tighten it with a group if the host has other local users.
    unix_mode: FileMode = 0o666
    # Only a trusted listener may carry the identity header (see [auth]): put nginx,
    # which sets it after authenticating, on a trusted listener and nothing else.
    trusted: bool = False


class Control(Struct, frozen=True, forbid_unknown_fields=True):
    """The publishers' HTTP API on a local Unix socket."""

    socket: str = "./run/fanout.sock"
    socket_mode: FileMode = 0o600
    max_body_bytes: Annotated[int, Meta(ge=1024, le=64 * 1024 * 1024)] = 1024 * 1024


class Jwt(Struct, frozen=True, forbid_unknown_fields=True):
    """[auth.jwt]: how signed tokens are checked (auth.mode = "jwt")."""

    # Keys, at least one of the three. A secret file is HS256 (32 bytes or more);
    # each PEM public key is RS256, ES256 (P-256) or EdDSA (Ed25519) by its type; a
    # JWKS file holds keys with ids (`kid`), which tokens name. All are re-read
    # together on reload; relative paths are from the daemon's working directory.
    secret_file: str = ""
    public_key_files: list[str] = msgspec.field(default_factory=list)
    jwks_file: str = ""
    # When set, tokens must carry this `aud` / `iss`.
    audience: str = ""
    issuer: str = ""
    # Clock skew tolerated on exp, nbf and iat.
    leeway_s: Annotated[float, Meta(ge=0, le=300)] = 30.0
    # Where a token may come from besides `Authorization: Bearer`: a cookie (how a
    # plain EventSource carries credentials), and, only when enabled, `?token=`
    # (which ends up in every access log on the way: prefer the cookie).
    cookie: str = ""
    query_token: bool = False
    # The claim holding {"subscribe": [patterns], "info": {public fields}}.
    grants_claim: str = "fanout"


class Auth(Struct, frozen=True, forbid_unknown_fields=True):
    # "none": every connection is anonymous. "header": the user is the value of
    # `header`, honoured only on trusted listeners. "jwt": a signed token ([auth.jwt]).
    mode: Literal["none", "header", "jwt"] = "none"
    header: str = "X-Fanout-User"
    # mode "header": a second header the trusted proxy sets next to the user, with
    # grant patterns separated by commas or spaces. Empty: not read.
    grants_header: str = ""
    allow_anonymous: bool = True
    # Patterns every connection may subscribe to (see fanout/grants.py): `*` is any
    # run of topic characters, `{user}` the connection's own user. Unset: ["*"]
    # (every topic, as before grants existed) in modes "none" and "header", [] in
    # mode "jwt" (only what the token grants).
    grants: list[str] | None = None
    jwt: Jwt = msgspec.field(default_factory=Jwt)


class Cors(Struct, frozen=True, forbid_unknown_fields=True):
    """Pages on other origins reading /events (EventSource withCredentials, fetch)."""

    # Exact origins ("https://app.example.com"); "*" for any, but never with
    # credentials. Empty: no CORS headers (same-origin pages only).
    allow_origins: list[str] = msgspec.field(default_factory=list)
    # Lets the page send its cookies (the token cookie) and read the stream.
    allow_credentials: bool = False
    # How long a browser may cache a preflight answer.
    max_age_s: Annotated[int, Meta(ge=0, le=86_400)] = 600


class Limits(Struct, frozen=True, forbid_unknown_fields=True):
    # One process holds about 19,900 sockets under a 20,000 open-files limit.
    max_connections: PositiveInt = 19_000
    max_connections_per_user: PositiveInt = 8
    per_user_policy: Literal["reject", "evict-oldest"] = "reject"
    retry_after_s: Annotated[int, Meta(ge=1, le=3600)] = 5
    # A subscriber whose kernel and transport buffers hold more than this is
    # disconnected: it resumes with Last-Event-ID instead of growing our memory.
    max_buffered_bytes: Annotated[int, Meta(ge=1024)] = 256 * 1024
    # The kernel's send buffer per subscriber socket; 0 keeps Linux autotuning,
    # which lets a stalled reader hold up to tcp_wmem's max (4 MiB) in the kernel
    # before max_buffered_bytes even starts to count. Set it to bound that memory.
    socket_send_buffer_bytes: Annotated[int, Meta(ge=0, le=64 * 1024 * 1024)] = 0
    max_topics_per_connection: Annotated[int, Meta(ge=1, le=1024)] = 32
    # 8 KiB, as nginx's large_client_header_buffers default line size.
    max_header_bytes: Annotated[int, Meta(ge=1024, le=1024 * 1024)] = 8 * 1024
    header_timeout_s: Seconds = 10.0
    # Per client address (IPv4, or IPv6 /ipv6_prefix_len), per process; 0 is off.
    # Behind nginx on a Unix socket there is no address: use nginx's limit_conn.
    max_connections_per_ip: Annotated[int, Meta(ge=0)] = 0
    connects_per_ip_per_s: Annotated[float, Meta(ge=0)] = 0.0
    connect_burst_per_ip: Annotated[int, Meta(ge=1, le=100_000)] = 20
    ipv6_prefix_len: Annotated[int, Meta(ge=32, le=128)] = 64


class Stream(Struct, frozen=True, forbid_unknown_fields=True):
    # Below nginx's default proxy_read_timeout (60 s) with a wide margin.
    heartbeat_interval_s: Seconds = 15.0
    # The reconnect delay EventSource is told to use (the `retry:` field).
    retry_ms: Annotated[int, Meta(ge=0, le=3_600_000)] = 3000
    # 0 writes at the end of each loop iteration; a few ms gathers more events
    # into each write at high publish rates, at the cost of that much latency.
    flush_interval_ms: Annotated[float, Meta(ge=0, le=1000)] = 0.0
    # On shutdown each stream is told to retry after a random delay up to this,
    # so thousands of clients do not reconnect in the same instant.
    shutdown_retry_spread_ms: Annotated[int, Meta(ge=0, le=600_000)] = 5000
    # After this, streams whose peers stopped reading are cut and the daemon exits.
    shutdown_timeout_s: Annotated[float, Meta(ge=0, le=600)] = 10.0


class Replay(Struct, frozen=True, forbid_unknown_fields=True):
    max_events_per_topic: Annotated[int, Meta(ge=0, le=1_000_000)] = 1000
    max_age_s: Seconds = 300.0
    # Budget for all retained frames together; the oldest go first when it is hit.
    max_bytes_total: Annotated[int, Meta(ge=0)] = 64 * 1024 * 1024
    # Topics (fnmatch patterns) whose latest event a new subscriber gets at once.
    latest_value_topics: list[str] = msgspec.field(default_factory=list)
    # A latest value outlives the ring (a dashboard updated hourly still shows its
    # state), but not for ever: gone after this long without an update, and only
    # this many topics keep one (the least recently updated go first).
    latest_max_age_s: Seconds = 86_400.0
    max_latest_topics: Annotated[int, Meta(ge=1)] = 100_000


class Backplane(Struct, frozen=True, forbid_unknown_fields=True):
    """Several daemons (hosts) share events, ids and per-user limits through Redis."""

    # "redis://host:6379/0" or "unix:///run/redis.sock"; empty: no backplane.
    redis: str = ""
    stream: str = "fanout:events"
    # XADD MAXLEN ~: how far back a client can resume on any daemon.
    max_len: Annotated[int, Meta(ge=100)] = 100_000
    # Recent stream entries each daemon loads into its replay rings at start.
    load_on_start: Annotated[int, Meta(ge=0)] = 10_000
    # A daemon refreshes its users' connections this often / 3; the connections of
    # a daemon that died stop counting after this.
    user_ttl_s: Annotated[float, Meta(ge=1, le=3600)] = 30.0


class Log(Struct, frozen=True, forbid_unknown_fields=True):
    level: LogLevel = "info"


class Demo(Struct, frozen=True, forbid_unknown_fields=True):
    """The live demo page at /demo and the publisher inside the daemon that drives it."""

    # Off unless asked for: when on, anyone who reaches a public listener can load
    # /demo and start (bounded) demo jobs, and demo:* topics carry demo traffic.
    enabled: bool = False
    counter_interval_s: Seconds = 1.0
    notification_interval_s: Seconds = 5.0
    # A demo job has 10 steps of this length.
    job_step_s: Seconds = 0.5
    # Jobs running at once; POST /demo/jobs answers 429 above it.
    max_jobs: Annotated[int, Meta(ge=1, le=1000)] = 20


class Ops(Struct, frozen=True, forbid_unknown_fields=True):
    """The live ops page at /ops and the publisher inside the daemon that feeds it."""

    # Off unless asked for: when on, anyone who reaches a public listener can load
    # /ops and follow the `fanout:ops` topic (the /stats snapshot: counts, pid,
    # uptime, listener addresses). Turn it on where only operators reach a listener.
    enabled: bool = False
    # How often the /stats snapshot is published; the page's rates are per second
    # over this interval.
    interval_s: Annotated[float, Meta(ge=0.05, le=3600)] = 1.0


def _default_listeners() -> list[Listener]:
    return [Listener(tcp="127.0.0.1:8080")]


class Config(Struct, frozen=True, forbid_unknown_fields=True):
    # Worker processes sharing the listeners; "auto" is one per core. Each holds
    # up to ~19,900 sockets under a 20,000 open-files limit.
    workers: Annotated[int, Meta(ge=1, le=64)] | Literal["auto"] = 1
    listener: list[Listener] = msgspec.field(default_factory=_default_listeners)
    control: Control = msgspec.field(default_factory=Control)
    auth: Auth = msgspec.field(default_factory=Auth)
    cors: Cors = msgspec.field(default_factory=Cors)
    limits: Limits = msgspec.field(default_factory=Limits)
    stream: Stream = msgspec.field(default_factory=Stream)
    replay: Replay = msgspec.field(default_factory=Replay)
    backplane: Backplane = msgspec.field(default_factory=Backplane)
    log: Log = msgspec.field(default_factory=Log)
    demo: Demo = msgspec.field(default_factory=Demo)
    ops: Ops = msgspec.field(default_factory=Ops)


def worker_count(config: Config) -> int:
    if config.workers == "auto":
        return max(1, os.cpu_count() or 1)
    return config.workers


def parse_tcp(address: str) -> tuple[str, int]:
    """ "127.0.0.1:8080" / "[::1]:8080" -> (host, port); raises ValueError."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"expected HOST:PORT, got {address!r}")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"port out of range in {address!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, port


def _check(config: Config) -> None:
    """Cross-field rules that msgspec constraints cannot express."""
    if not config.listener:
        raise ValueError("at least one [[listener]] is required - at `$.listener`")
    for i, listener in enumerate(config.listener):
        where = f"`$.listener[{i}]`"
        if bool(listener.tcp) == bool(listener.unix):
            raise ValueError(f"set exactly one of `tcp` or `unix` - at {where}")
        if listener.tcp:
            try:
                parse_tcp(listener.tcp)
            except ValueError as exc:
                raise ValueError(f"{exc} - at {where}.tcp") from None
    if not config.control.socket:
        raise ValueError("a control socket path is required - at `$.control.socket`")
    if config.auth.mode == "header":
        if not config.auth.header:
            raise ValueError("a header name is required - at `$.auth.header`")
        if not any(listener.trusted for listener in config.listener):
            raise ValueError(
                'auth.mode = "header" needs a listener with trusted = true - at `$.listener`'
            )
    _check_access(config)
    if config.backplane.redis and not config.backplane.redis.startswith(
        ("redis://", "rediss://", "unix://")
    ):
        raise ValueError("expected redis://, rediss:// or unix:// - at `$.backplane.redis`")
    if config.auth.mode == "none" and not config.auth.allow_anonymous:
        raise ValueError(
            'auth.mode = "none" makes every connection anonymous - at `$.auth.allow_anonymous`'
        )


_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+\Z")


def _check_access(config: Config) -> None:
    auth, jwt = config.auth, config.auth.jwt
    for key, name in (("header", auth.header), ("grants_header", auth.grants_header)):
        if name and not _HEADER_NAME.match(name):
            raise ValueError(f"not a valid header name: {name!r} - at `$.auth.{key}`")
    if auth.grants_header and auth.mode != "header":
        raise ValueError(
            'the grants header is only read in auth.mode = "header" - at `$.auth.grants_header`'
        )
    if auth.grants_header and auth.grants_header.lower() == auth.header.lower():
        raise ValueError("must differ from `header` - at `$.auth.grants_header`")
    for i, pattern in enumerate(auth.grants or ()):
        try:
            grants.check(pattern)
        except grants.PatternError as exc:
            raise ValueError(f"{exc} - at `$.auth.grants[{i}]`") from None
        if auth.mode == "none" and grants.USER in pattern:
            raise ValueError(
                'auth.mode = "none" has no users, so {user} never matches'
                f" - at `$.auth.grants[{i}]`"
            )
    if auth.mode == "jwt":
        if not (jwt.secret_file or jwt.public_key_files or jwt.jwks_file):
            raise ValueError(
                'auth.mode = "jwt" needs secret_file, public_key_files or jwks_file'
                " - at `$.auth.jwt`"
            )
        if not jwt.grants_claim:
            raise ValueError("a claim name is required - at `$.auth.jwt.grants_claim`")
        if jwt.cookie and not _HEADER_NAME.match(jwt.cookie):
            raise ValueError(f"not a valid cookie name: {jwt.cookie!r} - at `$.auth.jwt.cookie`")
        # Read now, so that check-config and the supervisor refuse an unusable key
        # before any worker starts; the daemon reads the files again to use them.
        try:
            tokens.KeySet(tokens.key_sources(jwt.secret_file, jwt.public_key_files, jwt.jwks_file))
        except tokens.KeyFileError as exc:
            raise ValueError(f"{exc} - at `$.auth.jwt`") from None
    elif jwt != Jwt():
        raise ValueError('[auth.jwt] is only read in auth.mode = "jwt" - at `$.auth.jwt`')
    for i, origin in enumerate(config.cors.allow_origins):
        try:
            check_origin(origin)
        except ValueError as exc:
            raise ValueError(f"{exc} - at `$.cors.allow_origins[{i}]`") from None
    if config.cors.allow_credentials and "*" in config.cors.allow_origins:
        raise ValueError(
            'allow_origins = ["*"] cannot be combined with credentials: list the origins'
            " - at `$.cors.allow_credentials`"
        )


def from_mapping(data: object) -> Config:
    """Validate an already-parsed mapping (raises ValueError naming the key)."""
    try:
        config = msgspec.convert(data, Config)
    except msgspec.ValidationError as exc:
        raise ValueError(str(exc)) from None
    _check(config)
    return config


def load(path: str | os.PathLike[str]) -> Config:
    """Read and validate a TOML file; every failure is one ConfigError line."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    try:
        return from_mapping(data)
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None
