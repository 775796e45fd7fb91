"""The warehouse diff engine beside the local one, on a PostgreSQL warehouse.

    .venv/bin/python -m bench.warehouse_diff --rows 2000000 [--changed 0.001]

In one run, against a real PostgreSQL server (the tests' Debian binaries) and the emulator:

1. setup (not measured): an Account-like table of ``--rows`` rows with ten mapped fields
   is generated in PostgreSQL; the model is planned once with ``diff: warehouse`` (which
   reads every row, as the engine's table is empty) and every row is committed to the
   state as synced, then the engine's write-back fills its table: the state a first
   sync leaves, without sending millions of records to the emulator;
2. ``--changed`` of the rows (0.1% by default) get a new annual revenue;
3. ``sf-activation plan`` runs as its own process once per engine (peak RSS its own,
   through bench/rusage_wrapper.py), the warehouse reached through a loopback TCP proxy
   that counts the bytes each way and the rows PostgreSQL sends (its DataRow messages):
   what left the warehouse, counted at the connection.

Both plans must report the same counts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import struct
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.harness import ACCOUNT_FIELDS, ROOT, emulator, measure

MODEL = "wh_bench"
SCHEMA = "sfa_bench"
COUNT_KEYS = ("rows", "added", "changed", "unchanged", "invalid", "pending")


# --------------------------------------------------------------------------- the proxy


@dataclass
class Counts:
    to_server: int = 0
    to_client: int = 0
    data_rows: int = 0


class CountingProxy:
    """Loopback TCP proxy in front of PostgreSQL: bytes each way, DataRow messages."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream = upstream_port
        self.counts = Counts()
        self._lock = threading.Lock()
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.port = self._sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def reset(self) -> Counts:
        with self._lock:
            out, self.counts = self.counts, Counts()
        return out

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, from_server: bool) -> None:
        # Server messages are a type byte and a 4-byte length (sslmode=disable: no SSL
        # answer byte first); 'D' is one row of a result.
        pending = b""
        try:
            while True:
                data = src.recv(1 << 16)
                if not data:
                    break
                dst.sendall(data)
                rows = 0
                if from_server:
                    pending += data
                    pos = 0
                    while len(pending) - pos >= 5:
                        kind = pending[pos : pos + 1]
                        (length,) = struct.unpack("!I", pending[pos + 1 : pos + 5])
                        if len(pending) - pos < 1 + length:
                            break
                        rows += kind == b"D"
                        pos += 1 + length
                    pending = pending[pos:]
                with self._lock:
                    if from_server:
                        self.counts.to_client += len(data)
                        self.counts.data_rows += rows
                    else:
                        self.counts.to_server += len(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)


# --------------------------------------------------------------------------- steps


def _model(models: Path, engine: str) -> None:
    models.mkdir(parents=True, exist_ok=True)
    fields = "\n".join(f"  {col}: {field}" for col, field in ACCOUNT_FIELDS.items())
    cols = ", ".join(ACCOUNT_FIELDS)
    (models / f"{MODEL}.yml").write_text(
        "object: Account\noperation: upsert\nprimary_key: account_id\n"
        f"external_id: External_Id__c\nquery: SELECT {cols} FROM accounts\n"
        f"diff: {engine}\nfields:\n{fields}\n"
    )


def build(url: str, rows: int) -> None:
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS accounts")
        conn.exec_driver_sql(
            f"""
            CREATE TABLE accounts AS
            SELECT 'B-' || lpad(i::text, 9, '0') AS account_id,
                   'Account ' || i AS name,
                   round(mod(i * 7919, 100000000)::numeric / 100, 2)::float8 AS annual_revenue,
                   mod(i * 31, 10000)::int AS employees,
                   (ARRAY['Banking', 'Energy', 'Retail', 'Technology'])[1 + mod(i, 4)] AS industry,
                   'https://a' || i || '.example.com' AS website,
                   '+1 555 ' || lpad(mod(i, 10000)::text, 4, '0') AS phone,
                   (ARRAY['Berlin', 'Lyon', 'Austin', 'Osaka', 'Quito'])[1 + mod(i, 5)] AS billing_city,
                   (ARRAY['DE', 'FR', 'US', 'JP', 'EC'])[1 + mod(i, 5)] AS billing_country,
                   'Customer since ' || (2000 + mod(i, 25)) || ', "tier" ' || mod(i, 3) AS description
            FROM generate_series(0::bigint, {rows - 1}) AS t(i)
            """
        )
        conn.exec_driver_sql("ANALYZE accounts")
    engine.dispose()


def change(url: str, share: float, rows: int) -> int:
    import sqlalchemy

    every = max(1, round(1 / share))
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as conn:
        result = conn.exec_driver_sql(
            "UPDATE accounts SET annual_revenue = annual_revenue + 1 "
            f"WHERE mod(substr(account_id, 3)::int, {every}) = 0"
        )
        n = result.rowcount
    engine.dispose()
    return int(n)


def step_setup(work: Path) -> dict:
    """State as a first sync leaves it, and the engine's table in step with it."""
    import pyarrow as pa

    from sf_activation.config import Settings
    from sf_activation.models import load_model
    from sf_activation.state import STATE_SCHEMA
    from sf_activation.sync import SyncRun
    from sf_activation.warehouse import Warehouse

    settings = Settings.from_env()
    run = SyncRun(load_model(settings.models_dir / f"{MODEL}.yml"), settings)
    plan = run.plan()
    try:
        committed = 0
        for b in plan.iter_to_send(100_000):
            n = b.num_rows
            run.state.commit(
                pa.table(
                    {
                        "pk": b.column("__pk"),
                        "hash": b.column("__hash"),
                        "sf_id": pa.array([f"001{committed + i:015d}" for i in range(n)]),
                        "status": pa.array(["synced"] * n),
                        "updated_at": pa.nulls(n, STATE_SCHEMA.field("updated_at").type),
                        "payload": b.column("__payload"),
                    },
                    schema=STATE_SCHEMA,
                )
            )
            committed += n
        describe = run.client.describe(run.spec.object)
        with Warehouse.from_url(settings.warehouse_url.get_secret_value()) as wh:
            engine = run._warehouse_engine(wh, describe)
            assert engine is not None
            full = plan.warehouse_full
            assert full is not None
            written = engine.write_back(
                plan.connection, run.state, full=full, state_key=plan.state_key_column
            )
    finally:
        plan.close()
    kept = run.state.compact(work_dir=work)
    run._cleanup()
    return {"state_rows": kept, "written_back": written}


STEPS = {"setup": step_setup}


# --------------------------------------------------------------------------- driver


def _env(work: Path, emu: object, url: str, engine: str) -> dict[str, str]:
    env = {
        **{
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("SF_ACTIVATION_", "SALESFORCE_"))
        },
        "PYTHONPATH": str(ROOT),
        "SALESFORCE_INSTANCE_URL": emu.instance_url,  # type: ignore[attr-defined]
        "SALESFORCE_ACCESS_TOKEN": emu.access_token,  # type: ignore[attr-defined]
        "SALESFORCE_CA_BUNDLE": emu.ca_bundle,  # type: ignore[attr-defined]
        "SF_ACTIVATION_WAREHOUSE_URL": url,
        "SF_ACTIVATION_MODELS_DIR": str(work / f"models-{engine}"),
        "SF_ACTIVATION_STATE_URL": str(work / "state"),
        "SF_ACTIVATION_REJECTS_URL": str(work / "rejects"),
        "SF_ACTIVATION_WAREHOUSE_STATE_SCHEMA": SCHEMA,
    }
    return env


@contextlib.contextmanager
def _postgres() -> Iterator[str]:
    sys.path.insert(0, str(ROOT))
    from sf_activation_tests.support.postgres import start_postgres

    with start_postgres() as url:
        yield url


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--changed", type=float, default=0.001, help="share of rows changed")
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child", choices=sorted(STEPS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(STEPS[args.child](args.work)))
        return 0

    from sqlalchemy.engine import make_url

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"cpus={os.cpu_count()} load average={load} rows={args.rows:,}", flush=True)
    with (
        tempfile.TemporaryDirectory(prefix="bench-whdiff-") as tmp,
        emulator(0) as emu,
        _postgres() as direct,
    ):
        work = Path(tmp)
        build(direct, args.rows)
        proxy = CountingProxy(make_url(direct).port or 5432)
        url = (
            make_url(direct)
            .set(port=proxy.port, query={"sslmode": "disable"})
            .render_as_string(hide_password=False)
        )
        for engine in ("local", "warehouse"):
            _model(work / f"models-{engine}", engine)
        env_wh = _env(work, emu, url, "warehouse")
        setup = measure(
            [sys.executable, "-m", "bench.warehouse_diff", "--child", "setup", "--work", str(work)],
            {**env_wh, "SF_ACTIVATION_MODELS_DIR": str(work / "models-warehouse")},
            cwd=ROOT,
        )
        print(f"setup: {setup.stdout.strip()} in {setup.wall_s:.1f} s", flush=True)
        n_changed = change(direct, args.changed, args.rows)
        print(f"changed rows: {n_changed:,}", flush=True)
        results = {}
        for engine in ("local", "warehouse"):
            proxy.reset()
            env = _env(work, emu, url, engine)
            m = measure([sys.executable, "-m", "sf_activation", "plan", MODEL, "--json"], env)
            counts = proxy.reset()
            summary = json.loads(m.stdout)
            results[engine] = (m, counts, summary)
        print()
        print("| engine | rows fetched (DataRow) | bytes from warehouse | bytes to warehouse "
              "| wall s | CPU s | peak RSS MB |")  # fmt: skip
        print("|---|---:|---:|---:|---:|---:|---:|")
        for engine, (m, c, _) in results.items():
            print(
                f"| {engine} | {c.data_rows:,} | {c.to_client:,} | {c.to_server:,} | "
                f"{m.wall_s:.1f} | {m.cpu_s:.1f} | {m.peak_rss_mb:,.0f} |"
            )
        local, remote = results["local"], results["warehouse"]
        same = {k: local[2][k] for k in COUNT_KEYS} == {k: remote[2][k] for k in COUNT_KEYS}
        print()
        print("counts:", {k: remote[2][k] for k in COUNT_KEYS}, "same for both:", same)
        ratio = remote[1].to_client / max(1, local[1].to_client)
        print(f"warehouse engine fetched {ratio:.3%} of the local engine's bytes, "
              f"{remote[1].data_rows / max(1, local[1].data_rows):.3%} of its rows")  # fmt: skip
        if not same:
            print("COUNTS DIFFER", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
