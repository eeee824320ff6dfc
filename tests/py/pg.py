"""A real PostgreSQL cluster for the Python suite: ``initdb`` into a temp dir, ``pg_ctl`` on a free port.

``postgres_cluster`` (session scope) starts one cluster per test run and stops it at the end;
``postgres_url`` gives each test a fresh, empty database in it. PostgreSQL refuses to run as
root: as root, the server runs as the ``postgres`` user (or ``vectorway-pg``, created when
neither exists). A missing PostgreSQL fails the run (``.ci/run`` installs it), never skips.
Registered by ``conftest.py`` through ``pytest_plugins``.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest


def _bin_dir() -> Path:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    dirs = sorted(p for p in glob.glob("/usr/lib/postgresql/*/bin") if os.path.exists(f"{p}/initdb"))
    if not dirs:
        pytest.fail(
            "PostgreSQL is not installed: no initdb on PATH or in /usr/lib/postgresql/*/bin "
            "(bash .ci/run installs it)",
            pytrace=False,
        )
    return Path(dirs[-1])


def _run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    for user in ("postgres", "vectorway-pg"):
        try:
            pwd.getpwnam(user)
            return user
        except KeyError:
            continue
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "vectorway-pg"],
        check=True,
    )
    return "vectorway-pg"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Cluster:
    """One running cluster: ``url(db)`` connects to a database in it, ``psql`` runs SQL."""

    dir: Path
    port: int
    user: str | None
    bin: Path

    def _cmd(self, program: str, *args: str) -> list[str]:
        argv = [str(self.bin / program), *args]
        return ["runuser", "-u", self.user, "--", *argv] if self.user else argv

    def url(self, db: str) -> str:
        return f"postgres://vw@127.0.0.1:{self.port}/{db}"

    def psql(self, db: str, sql: str) -> str:
        done = subprocess.run(
            ["psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", self.url(db), "-c", sql],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode != 0:
            raise RuntimeError(f"psql failed: {done.stderr}")
        return done.stdout.strip()

    def start(self) -> None:
        opts = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c max_connections=300"
        )
        subprocess.run(
            self._cmd("pg_ctl", "-D", str(self.dir / "data"), "-o", opts, "-l",
                      str(self.dir / "server.log"), "-w", "-t", "60", "start"),
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        subprocess.run(
            self._cmd("pg_ctl", "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[Cluster]:
    """One PostgreSQL cluster for the whole run, stopped (and its directory removed) at the end.
    Its directory is directly under the system temp dir: pytest's own is private to root, and
    the server's user must reach it."""
    user = _run_as()
    root = Path(tempfile.mkdtemp(prefix="vw-pg-"))
    if user:
        shutil.chown(root, user)
    bindir = _bin_dir()
    init = [str(bindir / "initdb"), "-A", "trust", "-U", "vw", "-E", "UTF8", "--no-sync",
            "-D", str(root / "data")]
    done = subprocess.run(["runuser", "-u", user, "--", *init] if user else init,
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"initdb failed: {done.stderr}", pytrace=False)
    cluster = Cluster(dir=root, port=_free_port(), user=user, bin=bindir)
    cluster.start()
    yield cluster
    cluster.stop()
    shutil.rmtree(root, ignore_errors=True)


_DB_SEQ = itertools.count()


@pytest.fixture
def postgres_url(postgres_cluster: Cluster) -> str:
    """A fresh, empty database for one test; its URL."""
    name = f"py_{os.getpid()}_{next(_DB_SEQ)}"
    postgres_cluster.psql("postgres", f"CREATE DATABASE {name}")
    return postgres_cluster.url(name)
