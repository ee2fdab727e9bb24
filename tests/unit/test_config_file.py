"""config.toml, fanout/config.py and the README's config reference stay in step.

config.toml promises to list every key with its default. This walks the config
structs (not a hand-kept list), so a field added to fanout/config.py without a line
in config.toml, or a key left in the file after its field went away, fails with a
message naming the key. The few places where the shipped file deliberately differs
from the defaults are listed in SHIPPED_DIFFERS, and each must say so in a comment.
"""

from __future__ import annotations

import re
import tomllib
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from fanout import config

ROOT = Path(__file__).resolve().parents[2]
CONFIG_TOML = ROOT / "config.toml"
README = ROOT / "README.md"

# key -> the value the shipped file has instead of the default, and why.
SHIPPED_DIFFERS: dict[str, Any] = {
    # The example file runs the demo (the README's quick start); the default is off,
    # because /demo lets anyone who reaches the listener start demo jobs.
    "demo.enabled": True,
    # track() progress and the demo page want latest values; the default is none.
    "replay.latest_value_topics": ["progress:*", "demo:*"],
}
DIFFERS_COMMENT = "differs from the default"


def _struct_of(annotation: Any) -> type[msgspec.Struct] | None:
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
        return annotation
    return None


def _list_of_struct(annotation: Any) -> type[msgspec.Struct] | None:
    if typing.get_origin(annotation) is list:
        (item,) = typing.get_args(annotation)
        return _struct_of(item)
    return None


def _default(struct: type[msgspec.Struct], name: str) -> Any:
    return getattr(struct(), name)


def setting_keys(struct: type[msgspec.Struct], prefix: str = "") -> Iterator[str]:
    """Every leaf setting as a dotted key: "workers", "listener.tcp", "limits.max_connections"."""
    for field in msgspec.structs.fields(struct):
        key = prefix + field.encode_name
        inner = _struct_of(field.type) or _list_of_struct(field.type)
        if inner is not None:
            yield from setting_keys(inner, key + ".")
        else:
            yield key


def file_problems(
    struct: type[msgspec.Struct],
    table: dict[str, Any],
    prefix: str = "",
    differs: dict[str, Any] | None = None,
    defaults: msgspec.Struct | None = None,
) -> list[str]:
    """What is wrong between one struct's defaults and one table of the file.

    `defaults` is the instance to compare with: the struct's own defaults, or for an
    array of tables the matching entry of the default list (listener: tcp is set).
    """
    differs = SHIPPED_DIFFERS if differs is None else differs
    defaults = struct() if defaults is None else defaults
    problems: list[str] = []
    fields = {f.encode_name: f for f in msgspec.structs.fields(struct)}
    for name in table:
        if name not in fields:
            problems.append(
                f"`{prefix}{name}` is in config.toml but is no setting of "
                f"{struct.__name__} in fanout/config.py"
            )
    for name, field in fields.items():
        key = prefix + name
        default = getattr(defaults, field.name)
        if name not in table and default is None:
            continue  # TOML has no null: such a key stands commented out (checked below)
        if name not in table:
            problems.append(
                f"`{key}` ({struct.__name__}.{field.name} in fanout/config.py) is missing "
                f"from config.toml: add it with its default, {msgspec.to_builtins(default)!r}"
            )
            continue
        value = table[name]
        if (inner := _struct_of(field.type)) is not None:
            problems += file_problems(inner, value, key + ".", differs)
        elif (item := _list_of_struct(field.type)) is not None:
            if not default:
                problems.append(f"`{key}`: give [[{key}]] a default entry to compare with")
                continue
            if len(value) != len(default):
                problems.append(
                    f"`{key}`: config.toml has {len(value)} [[{key}]] tables, "
                    f"the default has {len(default)}"
                )
            for entry, entry_default in zip(value, default, strict=False):
                problems += file_problems(item, entry, key + ".", differs, entry_default)
        else:
            expected = differs.get(key, msgspec.to_builtins(default))
            # type() too: 1 == 1.0 == True, but the file should spell the default's type.
            if value != expected or type(value) is not type(expected):
                why = "the shipped value in SHIPPED_DIFFERS" if key in differs else "the default"
                problems.append(
                    f"`{key}` is {value!r} in config.toml, {why} is {expected!r}"
                    f" (fanout/config.py {struct.__name__}.{field.name})"
                )
    return problems


def test_config_toml_lists_every_setting_with_its_default() -> None:
    shipped = tomllib.loads(CONFIG_TOML.read_text())
    problems = file_problems(config.Config, shipped)
    assert not problems, "config.toml and fanout/config.py disagree:\n" + "\n".join(problems)


def test_keys_without_a_toml_default_stand_commented_out() -> None:
    text = (ROOT / "config.toml").read_text()
    unset = [
        key
        for key in setting_keys(config.Config)
        if _default_at(key) is None and f"# {key.rsplit('.', 1)[-1]} = " not in text
    ]
    assert not unset, f"show these commented out in config.toml: {unset}"


def _default_at(key: str) -> Any:
    value: Any = config.Config()
    for part in key.split("."):
        if isinstance(value, list):
            value = value[0]
        value = getattr(value, part)
    return value


def test_config_toml_is_a_valid_config() -> None:
    loaded = config.load(CONFIG_TOML)
    assert loaded.demo.enabled is True
    assert loaded.replay.latest_value_topics == SHIPPED_DIFFERS["replay.latest_value_topics"]


def test_first_line_makes_the_promise_the_test_keeps() -> None:
    first = CONFIG_TOML.read_text().splitlines()[0]
    assert "the values below are the defaults" in first


@pytest.mark.parametrize("key", sorted(SHIPPED_DIFFERS))
def test_each_intended_difference_is_real_and_commented_in_the_file(key: str) -> None:
    section, name = key.rsplit(".", 1)
    struct = next(f.type for f in msgspec.structs.fields(config.Config) if f.encode_name == section)
    # A stale entry (the default changed to the shipped value) would hide nothing: drop it.
    assert msgspec.to_builtins(_default(struct, name)) != SHIPPED_DIFFERS[key], key
    assert _comment_above(CONFIG_TOML.read_text(), section, name).count(DIFFERS_COMMENT) == 1, (
        f"config.toml: the comment above `{key}` must say it {DIFFERS_COMMENT}"
    )


def _comment_above(text: str, section: str, name: str) -> str:
    """The comment lines directly above `name = ...` in `[section]`, lowercased."""
    lines = text.splitlines()
    start = lines.index(f"[{section}]")
    index = next(
        i for i in range(start + 1, len(lines)) if re.match(rf"{re.escape(name)}\s*=", lines[i])
    )
    comment: list[str] = []
    for line in reversed(lines[start + 1 : index]):
        if not line.startswith("#"):
            break
        comment.insert(0, line.lstrip("# "))
    return " ".join(comment).lower()


# -- the checker itself catches what it is for ------------------------------------


class _LimitsWithNewKey(config.Limits, frozen=True, forbid_unknown_fields=True):
    brand_new_limit: int = 7


class _ConfigWithNewSection(config.Config, frozen=True, forbid_unknown_fields=True):
    shiny: config.Log = msgspec.field(default_factory=config.Log)


def _shipped() -> dict[str, Any]:
    return tomllib.loads(CONFIG_TOML.read_text())


def test_a_field_added_without_a_line_in_config_toml_is_named() -> None:
    problems = file_problems(_LimitsWithNewKey, _shipped()["limits"], "limits.")
    assert len(problems) == 1
    assert "`limits.brand_new_limit`" in problems[0]
    assert "missing from config.toml" in problems[0]
    assert "7" in problems[0]


def test_a_section_added_without_a_table_in_config_toml_is_named() -> None:
    problems = file_problems(_ConfigWithNewSection, _shipped())
    assert problems == [
        "`shiny` (_ConfigWithNewSection.shiny in fanout/config.py) is missing from"
        " config.toml: add it with its default, {'level': 'info'}"
    ]


def test_an_unknown_key_in_the_file_is_named() -> None:
    table = {**_shipped()["stream"], "heartbeat_intervl_s": 3}
    problems = file_problems(config.Stream, table, "stream.")
    assert problems == [
        "`stream.heartbeat_intervl_s` is in config.toml but is no setting of Stream"
        " in fanout/config.py"
    ]


def test_a_value_that_is_not_the_default_is_named() -> None:
    shipped = _shipped()
    shipped["limits"]["max_connections"] = 500
    shipped["stream"]["retry_ms"] = 3000.0  # right value, wrong type
    shipped["listener"][0]["unix_mode"] = 0o644
    problems = file_problems(config.Config, shipped)
    assert [p.split(" ", 1)[0] for p in problems] == [
        "`listener.unix_mode`",
        "`limits.max_connections`",
        "`stream.retry_ms`",
    ]


def test_a_silent_difference_is_named() -> None:
    shipped = _shipped()
    problems = file_problems(config.Config, shipped, differs={})
    assert sorted(p.split(" ", 1)[0] for p in problems) == sorted(f"`{k}`" for k in SHIPPED_DIFFERS)


# -- the README's reference -------------------------------------------------------


def readme_config_rows(text: str) -> dict[str, str]:
    """Dotted key -> default cell, from the README's `## Configuration` table."""
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, str] = {}
    for row in section.splitlines():
        if not row.startswith("| `"):
            continue
        cells = row.split(" | ")
        table: str | None = None
        for span in re.findall(r"`([^`]+)`", cells[0]):
            if span.startswith("[[") and "]] " in span:
                table, span = span[2:].split("]] ", 1)
            elif "." in span:
                table, span = span.split(".", 1)
            rows[f"{table}.{span}" if table else span] = cells[1]
    return rows


def readme_config_keys(text: str) -> set[str]:
    return set(readme_config_rows(text))


_UNITS = {"KiB": 1024, "MiB": 1024 * 1024}


def readme_default(cell: str) -> tuple[bool, Any]:
    """(understood, value) of a default cell: `19000`, `256 KiB`, `"none"`, `false`, `[]`.

    The first part only: "`false` (`true` in the shipped file)" is false. Cells in
    prose ("`tcp = ...`") are not understood and not compared.
    """
    head = cell.split(" (", 1)[0].strip()
    if re.fullmatch(r"\d+(\.\d+)?", head):
        return True, float(head)
    if m := re.fullmatch(r"(\d+) (KiB|MiB)", head):
        return True, int(m[1]) * _UNITS[m[2]]
    if m := re.fullmatch(r"`([^`=]*)`", head):
        literal = m[1]
        try:
            return True, tomllib.loads(f"v = {literal}")["v"]
        except tomllib.TOMLDecodeError:
            return True, literal  # a bare word: X-Fanout-User, fanout:events
    return False, None


def test_readme_documents_every_setting_and_no_other() -> None:
    documented = readme_config_keys(README.read_text())
    settings = set(setting_keys(config.Config))
    missing = settings - documented
    assert not missing, f"not in the README's Configuration table: {sorted(missing)}"
    assert not documented - settings, f"README documents unknown keys: {documented - settings}"


def test_readme_documents_every_section() -> None:
    documented = {key.split(".")[0] for key in readme_config_keys(README.read_text())}
    sections = {f.encode_name for f in msgspec.structs.fields(config.Config)}
    assert sections <= documented, sections - documented


def test_readme_defaults_are_the_defaults() -> None:
    rows = readme_config_rows(README.read_text())
    defaults = _flat_defaults(config.Config)
    wrong, compared = [], 0
    for key, cell in rows.items():
        understood, value = readme_default(cell)
        if not understood or key not in defaults:
            continue
        compared += 1
        if value != defaults[key]:
            wrong.append(f"`{key}`: README says {cell.strip()!r}, the default is {defaults[key]!r}")
    assert not wrong, "\n".join(wrong)
    # Only prose cells are skipped: the listener's `tcp = "..."` row names two keys,
    # and a default of None ("unset", auth.grants) is said in words.
    unset = sum(1 for key in rows if key in defaults and defaults[key] is None)
    assert compared >= len(rows) - 2 - unset, f"compared {compared} of {len(rows)} README defaults"


def _flat_defaults(struct: type[msgspec.Struct], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    instance = struct()
    for field in msgspec.structs.fields(struct):
        value = getattr(instance, field.name)
        if isinstance(value, msgspec.Struct):
            out.update(_flat_defaults(type(value), prefix + field.encode_name + "."))
        elif (item := _list_of_struct(field.type)) is not None:
            # [[listener]]: the README describes the default (first) entry.
            entry = msgspec.to_builtins(value[0]) if value else {}
            for name in (f.encode_name for f in msgspec.structs.fields(item)):
                out[f"{prefix}{field.encode_name}.{name}"] = entry.get(name)
        else:
            out[prefix + field.encode_name] = msgspec.to_builtins(value)
    return out


def test_readme_default_parser() -> None:
    assert readme_default(" 19000 ") == (True, 19000)
    assert readme_default(" 256 KiB ") == (True, 256 * 1024)
    assert readme_default(' `"none"` ') == (True, "none")
    assert readme_default(" `false` (`true` in the shipped file) ") == (True, False)
    assert readme_default(" `0o600` ") == (True, 0o600)
    assert readme_default(" `X-Fanout-User` ") == (True, "X-Fanout-User")
    assert readme_default(' `tcp = "127.0.0.1:8080"` ') == (False, None)


def test_readme_key_parser_reads_the_table_forms() -> None:
    text = (
        "\n## Configuration\n\n| key | default |\n|---|---|\n"
        '| `workers` | 1 |\n| `[[listener]] tcp` / `unix` | x |\n| `auth.mode` | `"none"` |\n'
        "\n## Next\n| `not.this` | |\n"
    )
    assert readme_config_keys(text) == {"workers", "listener.tcp", "listener.unix", "auth.mode"}


def test_setting_keys_walks_nested_and_listed_structs() -> None:
    keys = list(setting_keys(config.Config))
    assert keys[0] == "workers"
    assert {"listener.tcp", "listener.trusted", "backplane.user_ttl_s", "demo.max_jobs"} <= set(
        keys
    )
    assert not any(k in {"listener", "limits", "backplane"} for k in keys)
