"""A throwaway PostgreSQL server for the warehouse tests (Debian's binaries, no Docker).

`start_postgres()` runs `initdb` + `pg_ctl start` on a private data directory and a free
loopback port and yields a SQLAlchemy URL. The session-scoped fixture `postgres_url`
wraps it; a test module uses it with
`from sf_activation_tests.support.postgres import postgres_url as postgres_url`.

initdb refuses to run as root, so as root the cluster is created and started as an
unprivileged user (`postgres` when Debian's package made one, else `nobody`) through
`runuser`, with the data directory chowned to it. As a normal user it runs directly.
Missing binaries are a hard failure, not a skip: CI must really test Postgres.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

PG_USER = "sfa"
PG_PASSWORD = "s3cret-pw"
PG_DATABASE = "warehouse"


def find_pg_bin_dir() -> Path | None:
    """The directory holding initdb/pg_ctl: Debian's versioned dir first, then PATH."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
        reverse=True,
    )
    for cand in candidates:
        if (Path(cand) / "initdb").exists() and (Path(cand) / "pg_ctl").exists():
            return Path(cand)
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(os.path.realpath(initdb)).parent
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_as() -> str | None:
    """The unprivileged account to run the server as, or None to run as ourselves."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    pytest.fail("running as root and neither a 'postgres' nor a 'nobody' account exists")


def _cmd(user: str | None, argv: list[str]) -> list[str]:
    if user is None:
        return argv
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", user, "--", *argv]
    return ["su", "-s", "/bin/sh", user, "-c", " ".join(_shell_quote(a) for a in argv)]


def _shell_quote(arg: str) -> str:
    return "'" + arg.replace("'", "'\\''") + "'"


@contextmanager
def start_postgres() -> Iterator[str]:
    """Start a private cluster; yield `postgresql+psycopg2://sfa:…@127.0.0.1:PORT/warehouse`."""
    bin_dir = find_pg_bin_dir()
    if bin_dir is None:
        pytest.fail(
            "PostgreSQL server binaries (initdb, pg_ctl) not found in /usr/lib/postgresql/*/bin "
            "or on PATH: run `make system-deps` (installs Debian's postgresql package)"
        )
    user = _run_as()
    # /tmp rather than pytest's tmp_path: the unprivileged user must be able to reach it,
    # and the unix-socket path must stay short.
    root = Path(tempfile.mkdtemp(prefix="sfa-pg-"))
    data = root / "data"
    pwfile = root / "pw"
    pwfile.write_text(PG_PASSWORD + "\n")
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chmod(root, 0o755)
        os.chown(root, entry.pw_uid, entry.pw_gid)
        os.chown(pwfile, entry.pw_uid, entry.pw_gid)
    port = free_port()
    log = root / "server.log"
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    try:
        subprocess.run(
            _cmd(
                user,
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    PG_USER,
                    f"--pwfile={pwfile}",
                    "--auth=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ],
            ),
            check=True,
            capture_output=True,
            env=env,
            timeout=120,
        )
        options = (
            f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={root} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c shared_buffers=32MB -c max_connections=20"
        )
        subprocess.run(
            _cmd(
                user,
                [
                    str(bin_dir / "pg_ctl"),
                    "-D",
                    str(data),
                    "-l",
                    str(log),
                    "-o",
                    options,
                    "-w",
                    "-t",
                    "60",
                    "start",
                ],
            ),
            check=True,
            capture_output=True,
            env=env,
            timeout=90,
        )
    except subprocess.CalledProcessError as exc:
        tail = log.read_text()[-2000:] if log.exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(
            f"could not start PostgreSQL from {bin_dir}: {exc.stderr.decode(errors='replace')}"
            f"\n{tail}"
        )
    try:
        _create_database(port)
        yield f"postgresql+psycopg2://{PG_USER}:{PG_PASSWORD}@127.0.0.1:{port}/{PG_DATABASE}"
    finally:
        subprocess.run(
            _cmd(user, [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
            capture_output=True,
            env=env,
            timeout=60,
        )
        shutil.rmtree(root, ignore_errors=True)


def _create_database(port: int) -> None:
    import psycopg2

    deadline = time.monotonic() + 30
    while True:
        try:
            conn = psycopg2.connect(
                host="127.0.0.1", port=port, user=PG_USER, password=PG_PASSWORD, dbname="postgres"
            )
            break
        except psycopg2.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {PG_DATABASE}")
    conn.close()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """Session-wide server; import this fixture into a test module to use it."""
    with start_postgres() as url:
        yield url
