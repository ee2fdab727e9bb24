"""The sdist and the wheel build, pass `twine check`, install into a fresh venv and run.

So that packaging never rots: a module or static file left out of the wheel, a
broken README rendering on PyPI, an entry point that does not start, or an optional
framework that became a hard import, fails here instead of for the first user.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import fanout
from fanout.client import Publisher, PublishError
from tests.conftest import wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "fanout"
# The frameworks of fanout.integrations are extras: a plain install has none of them.
OPTIONAL = ("django", "starlette", "fastapi", "celery")


def run(*args: str | Path, cwd: Path, timeout: float = 180) -> str:
    done = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    assert done.returncode == 0, f"{args} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout


def source_files() -> list[str]:
    """What a fresh clone would hold: tracked files, plus new files that are not ignored."""
    listed = run("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=ROOT)
    return [name for name in listed.split("\0") if name and (ROOT / name).is_file()]


def package_files() -> set[str]:
    """What the wheel must hold: every module and data file under fanout/."""
    return {name for name in source_files() if name.startswith("fanout/")}


def source_tree(dest: Path) -> Path:
    """A copy of the files of a fresh clone, as they are now in the worktree.

    Not ROOT itself: setuptools reuses a stale fanout.egg-info/SOURCES.txt left by an
    earlier build or editable install, which can put files in the sdist that a clean
    checkout would not get.
    """
    for name in source_files():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    return dest


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    src = source_tree(tmp_path_factory.mktemp("src"))
    out = tmp_path_factory.mktemp("dist")
    # sdist first, then the wheel built from the unpacked sdist (build's default), so a
    # file missing from the sdist shows up as a file missing from the wheel. No
    # isolated build env: the venv's setuptools builds it, nothing is downloaded.
    run(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, src, cwd=src)
    (sdist,) = out.glob("fanout-*.tar.gz")
    (wheel,) = out.glob("fanout-*.whl")
    return sdist, wheel


def test_twine_check_passes(dists: tuple[Path, Path]) -> None:
    out = run(sys.executable, "-m", "twine", "check", "--strict", *dists, cwd=ROOT)
    assert out.count("PASSED") == 2, out


def test_the_wheel_holds_every_module_and_static_file(dists: tuple[Path, Path]) -> None:
    _, wheel = dists
    version = fanout.__version__
    assert wheel.name == f"fanout-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        metadata = zf.read(f"fanout-{version}.dist-info/METADATA").decode()
        entry_points = zf.read(f"fanout-{version}.dist-info/entry_points.txt").decode()
    missing = package_files() - names
    assert not missing, f"not in the wheel: {sorted(missing)}"
    assert any(n.startswith("fanout/static/") for n in names)
    assert "fanout = fanout.cli:main" in entry_points
    # Extras exist for each framework, and no framework is a plain requirement.
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    for framework in ("django", "starlette", "celery"):
        assert f"Provides-Extra: {framework}" in metadata
    plain = [r for r in requires if "extra ==" not in r]
    assert not [r for r in plain if any(f in r.lower() for f in OPTIONAL)], plain


def test_the_sdist_holds_the_sources_and_the_config(dists: tuple[Path, Path]) -> None:
    sdist, _ = dists
    prefix = f"fanout-{fanout.__version__}/"
    with tarfile.open(sdist) as tf:
        names = {n.removeprefix(prefix) for n in tf.getnames()}
    missing = (package_files() | {"pyproject.toml", "README.md"}) - names
    assert not missing, f"not in the sdist: {sorted(missing)}"


@pytest.fixture(scope="module")
def installed(dists: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel (and its dependencies, from pip's cache) installed."""
    _, wheel = dists
    venv = tmp_path_factory.mktemp("wheel") / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=venv.parent)
    run(venv / "bin" / "pip", "install", "-q", wheel, cwd=venv.parent)
    return venv


def test_the_installed_wheel_runs(installed: Path, tmp_path: Path) -> None:
    venv = installed
    bin_ = venv / "bin"

    # Run from tmp_path so nothing is imported from the source tree.
    version = run(bin_ / "fanout", "--version", cwd=tmp_path)
    assert version.strip() == f"fanout {fanout.__version__}"
    checked = run(bin_ / "fanout", "check-config", ROOT / "config.toml", cwd=tmp_path)
    assert checked.strip() == f"{ROOT / 'config.toml'}: ok"

    where = run(bin_ / "python", "-c", IMPORTS, cwd=tmp_path).split()
    assert Path(where[0]).is_relative_to(venv), where
    assert where[1:] == ["absent"] * len(OPTIONAL), where


IMPORTS = f"""
import importlib.util, fanout.client, fanout.integrations
print(fanout.__file__)
for name in {OPTIONAL!r}:
    print("absent" if importlib.util.find_spec(name) is None else "installed:" + name)
"""


def test_the_installed_daemon_serves_its_static_files(
    installed: Path, tmp_path: Path, short_tmp: Path
) -> None:
    """fanout.js is read with importlib.resources: from the wheel's files, not the tree."""
    public, control = short_tmp / "public.sock", short_tmp / "control.sock"
    config = short_tmp / "fanout.toml"
    config.write_text(f'[[listener]]\nunix = "{public}"\n\n[control]\nsocket = "{control}"\n')
    log = short_tmp / "daemon.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [installed / "bin" / "fanout", "serve", "-c", config],
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    publisher = Publisher(str(control))
    try:

        def ready() -> bool:
            assert proc.poll() is None, log.read_text()
            try:
                return bool(publisher.stats())
            except (PublishError, OSError):
                publisher.close()
                return False

        wait_for(ready, 15, "the installed daemon to start")
        status, body = get_unix(public, "/fanout.js")
        assert status == 200
        assert body == (PACKAGE / "static" / "fanout.js").read_bytes()
    finally:
        publisher.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)


def get_unix(path: Path, target: str) -> tuple[int, bytes]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(str(path))
    conn = http.client.HTTPConnection("localhost")
    conn.sock = sock
    conn.request("GET", target)
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, body
