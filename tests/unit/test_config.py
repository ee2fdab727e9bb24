from pathlib import Path

import pytest

from fanout import config

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_config_loads_and_matches_defaults():
    loaded = config.load(ROOT / "config.toml")
    assert loaded.listener[0].tcp == "127.0.0.1:8080"
    assert loaded.control.socket == "./run/fanout.sock"
    assert loaded.control.socket_mode == 0o600
    assert loaded.limits == config.Limits()
    assert loaded.replay.max_events_per_topic == config.Replay().max_events_per_topic


def _error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(config.ConfigError) as info:
        config.load(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    return message


def test_unknown_key_is_named(tmp_path):
    assert "heartbeat_intervl_s" in _error(tmp_path, "[stream]\nheartbeat_intervl_s = 3\n")


def test_wrong_type_names_the_key(tmp_path):
    msg = _error(tmp_path, '[limits]\nmax_connections = "many"\n')
    assert "$.limits.max_connections" in msg
    assert "int" in msg


def test_out_of_range_names_the_key(tmp_path):
    msg = _error(tmp_path, "[limits]\nmax_connections = 0\n")
    assert ">= 1" in msg
    assert "$.limits.max_connections" in msg


def test_bad_enum(tmp_path):
    assert "per_user_policy" in _error(tmp_path, '[limits]\nper_user_policy = "kick"\n')


def test_listener_needs_exactly_one_address(tmp_path):
    msg = _error(tmp_path, '[[listener]]\ntcp = "127.0.0.1:1"\nunix = "/tmp/x"\n')
    assert "$.listener[0]" in msg
    assert "exactly one" in msg


def test_bad_tcp_address(tmp_path):
    assert "HOST:PORT" in _error(tmp_path, '[[listener]]\ntcp = "localhost"\n')


def test_header_auth_needs_a_trusted_listener(tmp_path):
    assert "trusted" in _error(tmp_path, '[auth]\nmode = "header"\n')


def test_invalid_toml(tmp_path):
    assert "invalid TOML" in _error(tmp_path, "[limits\n")


def test_missing_file(tmp_path):
    with pytest.raises(config.ConfigError, match="cannot read"):
        config.load(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:80", ("127.0.0.1", 80)), ("[::1]:0", ("::1", 0))],
)
def test_parse_tcp(text, expected):
    assert config.parse_tcp(text) == expected


def test_shipped_config_has_the_access_defaults():
    loaded = config.load(ROOT / "config.toml")
    assert loaded.auth == config.Auth()
    assert loaded.cors == config.Cors()


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ('[auth]\nmode = "jwt"\n', "$.auth.jwt", "needs secret_file"),
        ('[auth]\ngrants = ["a b"]\n', "$.auth.grants[0]", "invalid grant"),
        ('[auth]\ngrants = ["ok", "t?"]\n', "$.auth.grants[1]", "invalid grant"),
        ('[auth]\ngrants = ["user:{user}:*"]\n', "$.auth.grants[0]", "{user} never matches"),
        ('[auth]\ngrants_header = "X-G"\n', "$.auth.grants_header", "only read in"),
        ('[auth]\nheader = "X Fanout"\n', "$.auth.header", "not a valid header name"),
        ('[auth.jwt]\ncookie = "t"\n', "$.auth.jwt", 'only read in auth.mode = "jwt"'),
        (
            '[auth]\nmode = "jwt"\n[auth.jwt]\nsecret_file = "/nonexistent/s"\n',
            "$.auth.jwt",
            "/nonexistent/s: cannot read",
        ),
        ('[cors]\nallow_origins = ["https://a.example/"]\n', "$.cors.allow_origins[0]", "no path"),
        ('[cors]\nallow_origins = ["null"]\n', "$.cors.allow_origins[0]", "sandboxed"),
        (
            '[cors]\nallow_origins = ["*"]\nallow_credentials = true\n',
            "$.cors.allow_credentials",
            "cannot be combined with credentials",
        ),
    ],
)
def test_access_settings_are_checked(tmp_path, text, key, words):
    msg = _error(tmp_path, text)
    assert f"`{key}`" in msg
    assert words in msg


def test_jwt_key_problems_are_found_at_load(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("too short\n")
    text = f'[auth]\nmode = "jwt"\n[auth.jwt]\nsecret_file = "{secret}"\n'
    assert "needs at least 32 bytes" in _error(tmp_path, text)
    secret.write_text("x" * 40)
    loaded = config.load(_write(tmp_path, text))
    assert loaded.auth.mode == "jwt"


def _write(tmp_path, text):
    path = tmp_path / "ok.toml"
    path.write_text(text)
    return path
