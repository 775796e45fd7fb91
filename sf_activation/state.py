"""What Salesforce last accepted, per model: a Parquet snapshot plus per-batch commits.

Layout under ``{state_url}/{model}/`` (a local directory or ``s3://bucket/prefix``)::

    snapshot.parquet
    commits/s{seq:012d}-{run_id}.parquet
    ledger/…                       what is in flight (sf_activation/ledger.py)
    lease.*                        who may write (sf_activation/lease.py)

``seq`` is one sequence per model that every worker agrees on: a run takes the next
number after the highest commit (or folded mark) in the store, and only the run holding
the model's lease writes. Order therefore never depends on a worker's clock (a worker
whose clock lagged used to name its commits before the last compaction's mark, and they
were skipped). Files named by the earlier scheme (``{stamp}-{run_id}-{n}.parquet``) sort
before every ``s…`` name, so a store written by an older version folds in the right order.

Rows: ``pk`` string, ``hash`` string, ``sf_id`` string|null, ``status``
(``synced``|``rejected``|``deleted``), ``updated_at`` timestamp (UTC), ``payload`` string|null
(compact JSON of the record as last sent; see docs/internals.md for why it is kept).

Every write is atomic: locally a temp file, fsync, rename; on S3 one object upload, which
S3 makes visible only when complete. ``commit()`` is durable when it returns, so a run
killed between batches loses nothing it had confirmed. All folding (latest row per key)
runs in DuckDB over the Parquet files, never in a Python dict of rows.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from sf_activation.testhooks import kill_point  # test hook: no-op unless set

STATUSES = ("synced", "rejected", "deleted")

STATE_SCHEMA = pa.schema(
    [
        pa.field("pk", pa.string(), nullable=False),
        pa.field("hash", pa.string()),
        pa.field("sf_id", pa.string()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("updated_at", pa.timestamp("us", tz="UTC")),
        pa.field("payload", pa.string()),
    ]
)
STATE_COLUMNS = tuple(STATE_SCHEMA.names)

SNAPSHOT_NAME = "snapshot.parquet"
COMMITS_DIR = "commits"
# Parquet metadata key on the snapshot: the last commit file folded into it. A compaction
# killed before it removed the commit files leaves them behind; load() skips them.
FOLDED_KEY = b"sf_activation.folded_through"
# The snapshot is kept and read every run: small on disk. Commit files live until the next
# compaction and are written every few thousand rows while sending, so they are written
# cheaply: no dictionaries (keys, hashes and payloads are all distinct) and lz4, which
# cost about half of zstd's CPU for these columns.
SNAPSHOT_WRITE_OPTIONS: dict[str, Any] = {"compression": "zstd"}
COMMIT_WRITE_OPTIONS: dict[str, Any] = {"compression": "lz4", "use_dictionary": False}
COMPACT_BATCH_ROWS = 100_000  # rows per batch (and row group) when folding into a snapshot

_SAFE_ID_RE = re.compile(r"[^A-Za-z0-9_.-]+")
_MODEL_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")  # as models.MODEL_NAME_RE


class StateError(Exception):
    """State that cannot be read or written (bad URL, unreadable file, bad rows)."""


def _s3_filesystem() -> pafs.S3FileSystem:
    """pyarrow's S3 client configured from the usual AWS_* variables.

    Older Arrow builds ignore AWS_ENDPOINT_URL, so it is passed explicitly; the region
    is passed too so no bucket-region lookup goes to real AWS when an endpoint is set.
    """
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    kwargs: dict[str, object] = {"region": region}
    if endpoint:
        kwargs["endpoint_override"] = endpoint
        if endpoint.startswith("http://"):
            kwargs["scheme"] = "http"
    key = os.environ.get("AWS_ACCESS_KEY_ID")
    secret = os.environ.get("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        kwargs["access_key"] = key
        kwargs["secret_key"] = secret
        token = os.environ.get("AWS_SESSION_TOKEN")
        if token:
            kwargs["session_token"] = token
    return pafs.S3FileSystem(**kwargs)


def _boto3_s3():
    """boto3 client for uploads: its transfer manager aborts a failed multipart upload,
    so a broken write never publishes a truncated object (pyarrow's output stream would
    complete the upload with the parts it had on close). boto3 reads AWS_ENDPOINT_URL."""
    import boto3

    return boto3.client("s3")


def _write_parquet(
    path: Path,
    data: pa.Table | pa.RecordBatchReader,
    metadata: dict | None,
    options: dict[str, Any],
) -> int:
    if isinstance(data, pa.Table):
        if metadata:
            data = data.replace_schema_metadata({**(data.schema.metadata or {}), **metadata})
        pq.write_table(data, path, **options)
        return data.num_rows
    schema = STATE_SCHEMA.with_metadata(metadata or {})
    rows = 0
    with pq.ParquetWriter(path, schema, **options) as writer:
        for batch in data:
            writer.write_table(pa.Table.from_batches([batch]).cast(schema))
            rows += batch.num_rows
    return rows


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def normalize_state(rows: pa.Table) -> pa.Table:
    """Cast rows to :data:`STATE_SCHEMA`: fill ``updated_at`` (now) and optional columns
    (null), check statuses and keys; raise :class:`StateError` on anything else."""
    missing = [c for c in ("pk", "status") if c not in rows.column_names]
    if missing:
        raise StateError(f"state rows lack column(s) {', '.join(missing)}")
    unknown = [c for c in rows.column_names if c not in STATE_COLUMNS]
    if unknown:
        raise StateError(f"state rows have unknown column(s) {', '.join(unknown)}")
    n = rows.num_rows
    now = pa.scalar(dt.datetime.now(dt.UTC), pa.timestamp("us", tz="UTC"))
    arrays = []
    for field in STATE_SCHEMA:
        if field.name in rows.column_names:
            col = rows.column(field.name)
            if field.name == "updated_at":
                col = pc.fill_null(col.cast(field.type), now)
            else:
                col = col.cast(field.type)
        elif field.name == "updated_at":
            col = pa.array([now.as_py()] * n, field.type) if n else pa.array([], field.type)
        else:
            col = pa.nulls(n, field.type)
        arrays.append(col)
    table = pa.Table.from_arrays(arrays, schema=STATE_SCHEMA.with_metadata(None))
    if n:
        if table.column("pk").null_count:
            raise StateError("state rows have a null pk")
        bad = pc.invert(pc.is_in(table.column("status"), value_set=pa.array(STATUSES)))
        if pc.any(bad).as_py():
            first = table.column("status").filter(bad)[0].as_py()
            raise StateError(f"state status {first!r} is not one of {', '.join(STATUSES)}")
    return table


def empty_state() -> pa.Table:
    return STATE_SCHEMA.empty_table()


class StateStore:
    """Sync state of one model. Not safe for two concurrent runs of the same model
    (Dagster's per-model job and pool keep runs of one model apart)."""

    def __init__(self, state_url: str, model: str, *, run_id: str | None = None) -> None:
        if not _MODEL_RE.match(model):
            raise StateError(f"model name {model!r} is not a safe identifier")
        self.state_url = state_url
        self.model = model
        self.run_id = _SAFE_ID_RE.sub("_", run_id or uuid.uuid4().hex)[:64]
        self._seq: int | None = None  # the last sequence number used; read on first commit
        self._s3_client = None
        if state_url.startswith("s3://"):
            rest = state_url[len("s3://") :].strip("/")
            if not rest:
                raise StateError(f"state URL {state_url!r} names no bucket")
            bucket, _, prefix = rest.partition("/")
            self._bucket = bucket
            self._key_prefix = "/".join(p for p in (prefix.strip("/"), model) if p)
            self._fs: pafs.FileSystem = _s3_filesystem()
            self._base = f"{bucket}/{self._key_prefix}"
            self._local_root: Path | None = None
        elif "://" in state_url and not state_url.startswith("file://"):
            raise StateError(f"state URL {state_url!r}: use a directory or s3://bucket/prefix")
        else:
            root = Path(state_url.removeprefix("file://")).absolute() / model
            self._local_root = root
            self._fs = pafs.LocalFileSystem()
            self._base = root.as_posix()

    def _client(self):
        # One boto3 client per store: creating one costs tens of milliseconds, and the
        # sync commits once per confirmed batch.
        if self._s3_client is None:
            self._s3_client = _boto3_s3()
        return self._s3_client

    # ------------------------------------------------------------------ paths

    @property
    def is_s3(self) -> bool:
        return self._local_root is None

    @property
    def url(self) -> str:
        """Where this model's state lives, for messages and metadata."""
        return f"s3://{self._base}" if self.is_s3 else self._base

    def _path(self, rel: str) -> str:
        return f"{self._base}/{rel}"

    def commit_files(self) -> list[str]:
        """Commit file names (relative to ``commits/``) in the order they were written."""
        selector = pafs.FileSelector(self._path(COMMITS_DIR), allow_not_found=True)
        try:
            infos = self._fs.get_file_info(selector)
        except OSError as exc:
            raise StateError(f"cannot list {self.url}/{COMMITS_DIR}: {exc}") from exc
        names = [
            i.base_name
            for i in infos
            if i.type == pafs.FileType.File and i.base_name.endswith(".parquet")
        ]
        return sorted(names)

    def _snapshot_exists(self) -> bool:
        info = self._fs.get_file_info(self._path(SNAPSHOT_NAME))
        return info.type == pafs.FileType.File

    # ------------------------------------------------------------------ writes

    def _write_atomic(
        self,
        rel: str,
        data: pa.Table | pa.RecordBatchReader,
        metadata: dict | None = None,
        *,
        write_options: dict[str, Any] | None = None,
    ) -> int:
        """Write `data` (a table, or a stream of state batches) as one Parquet object that
        appears only once complete. Returns the rows written."""
        options = write_options or SNAPSHOT_WRITE_OPTIONS
        if not self.is_s3:
            assert self._local_root is not None
            target = self._local_root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
            try:
                rows = _write_parquet(tmp, data, metadata, options)
                with open(tmp, "rb+") as fh:
                    os.fsync(fh.fileno())
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
            _fsync_dir(target.parent)
            return rows
        # S3: write locally, then one upload; the object exists only once complete.
        with tempfile.TemporaryDirectory(prefix="sfa-state-") as tmpdir:
            tmp = Path(tmpdir) / "part.parquet"
            rows = _write_parquet(tmp, data, metadata, options)
            try:
                self._client().upload_file(str(tmp), self._bucket, f"{self._key_prefix}/{rel}")
            except Exception as exc:  # botocore raises many types; all mean "not written"
                raise StateError(f"cannot write {self.url}/{rel}: {exc}") from exc
        return rows

    def _last_seq(self) -> int:
        """The highest sequence number in the store: commit files and the folded mark."""
        names = self.commit_files()
        if self._snapshot_exists():
            names.append(self._read_snapshot_metadata().get(FOLDED_KEY, b"").decode())
        return max((_seq_of(n) for n in names), default=0)

    def commit(self, rows: pa.Table) -> str:
        """Record one confirmed batch; durable before it returns. Returns the file name."""
        table = normalize_state(rows)
        if table.num_rows == 0:
            return ""
        if self._seq is None:
            self._seq = self._last_seq()
        self._seq += 1
        name = f"s{self._seq:012d}-{self.run_id}.parquet"
        self._write_atomic(f"{COMMITS_DIR}/{name}", table, write_options=COMMIT_WRITE_OPTIONS)
        return name

    # ------------------------------------------------------------ small files

    def check_writable(self) -> None:
        """Prove the store takes a write (and a delete) before anything is sent, so a
        read-only directory or a bucket that refuses writes fails the run up front."""
        rel = f".write-check-{self.run_id}"
        try:
            if self.is_s3:
                client = self._client()
                key = f"{self._key_prefix}/{rel}"
                client.put_object(Bucket=self._bucket, Key=key, Body=b"")
                client.delete_object(Bucket=self._bucket, Key=key)
                return
            assert self._local_root is not None
            self._local_root.mkdir(parents=True, exist_ok=True)
            probe = self._local_root / rel
            with open(probe, "wb") as fh:
                fh.write(b"ok")
                fh.flush()
                os.fsync(fh.fileno())
            probe.unlink()
        except Exception as exc:  # OSError locally; botocore's many types on S3
            reason = getattr(exc, "strerror", None) or _s3_code(exc) or type(exc).__name__
            raise StateError(
                f"state store {self.url} is not writable ({reason}); nothing was sent. Fix its "
                "permissions or point SF_ACTIVATION_STATE_URL at a writable directory or "
                "s3://bucket/prefix"
            ) from None

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write one small file atomically (a temp file renamed; one upload on S3)."""
        if self.is_s3:
            try:
                self._client().put_object(
                    Bucket=self._bucket, Key=f"{self._key_prefix}/{rel}", Body=data
                )
            except Exception as exc:  # botocore raises many types; all mean "not written"
                raise StateError(f"cannot write {self.url}/{rel}: {exc}") from exc
            return
        assert self._local_root is not None
        target = self._local_root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)

    def read_bytes(self, rel: str) -> bytes:
        """A small file's content; FileNotFoundError when there is none."""
        info = self._fs.get_file_info(self._path(rel))
        if info.type != pafs.FileType.File:
            raise FileNotFoundError(f"{self.url}/{rel}")
        with self._fs.open_input_stream(self._path(rel)) as fh:
            return fh.read()

    def write_table(self, rel: str, table: pa.Table, metadata: dict | None = None) -> None:
        """Write one small Parquet file atomically and durably (the ledger's entries)."""
        self._write_atomic(rel, table, metadata, write_options=COMMIT_WRITE_OPTIONS)

    def read_table(self, rel: str) -> pa.Table:
        try:
            with self._fs.open_input_file(self._path(rel)) as fh:
                return pq.read_table(fh)
        except OSError as exc:
            raise StateError(f"cannot read {self.url}/{rel}: {exc}") from exc

    def list_files(self, directory: str, suffix: str = ".parquet") -> list[str]:
        """File names under `directory` (relative to the model's state), sorted."""
        selector = pafs.FileSelector(self._path(directory), allow_not_found=True)
        try:
            infos = self._fs.get_file_info(selector)
        except OSError as exc:
            raise StateError(f"cannot list {self.url}/{directory}: {exc}") from exc
        return sorted(
            i.base_name
            for i in infos
            if i.type == pafs.FileType.File and i.base_name.endswith(suffix)
        )

    def delete_files(self, rels: list[str]) -> None:
        self._delete(rels)

    # ------------------------------------------------------------------ reads

    @contextmanager
    def local_files(self, work_dir: Path | None = None) -> Iterator[tuple[Path | None, list[Path]]]:
        """The snapshot (or None) and the unfolded commit files as local paths, in order.

        On S3 they are downloaded into a temp directory under ``work_dir`` that is removed
        on exit; locally they are the files themselves.
        """
        commits = self.commit_files()
        has_snapshot = self._snapshot_exists()
        folded = ""
        if has_snapshot:
            meta = self._read_snapshot_metadata()
            folded = meta.get(FOLDED_KEY, b"").decode()
        commits = [c for c in commits if c > folded]
        if not self.is_s3:
            assert self._local_root is not None
            snap = self._local_root / SNAPSHOT_NAME if has_snapshot else None
            yield snap, [self._local_root / COMMITS_DIR / c for c in commits]
            return
        tmpdir = Path(tempfile.mkdtemp(prefix="sfa-state-", dir=work_dir))
        try:
            snap = None
            rels = ([SNAPSHOT_NAME] if has_snapshot else []) + [
                f"{COMMITS_DIR}/{c}" for c in commits
            ]
            local: list[Path] = []
            for rel in rels:
                dest = tmpdir / rel.replace("/", "__")
                try:
                    with (
                        self._fs.open_input_stream(self._path(rel)) as src,
                        open(dest, "wb") as out,
                    ):
                        shutil.copyfileobj(src, out, 8 << 20)
                except FileNotFoundError:
                    # A concurrent compaction removed a folded commit; it is in the snapshot.
                    continue
                local.append(dest)
            if has_snapshot:
                snap, local = local[0], local[1:]
            yield snap, local
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)

    def _read_snapshot_metadata(self) -> dict[bytes, bytes]:
        try:
            with self._fs.open_input_file(self._path(SNAPSHOT_NAME)) as fh:
                return dict(pq.read_schema(fh).metadata or {})
        except OSError as exc:
            raise StateError(f"cannot read {self.url}/{SNAPSHOT_NAME}: {exc}") from exc

    def load(
        self,
        columns: list[str] | None = None,
        *,
        include_deleted: bool = False,
        work_dir: Path | None = None,
        memory_limit: str = "1GB",
    ) -> pa.Table:
        """The current state: snapshot with leftover commits applied in order (latest row
        per pk wins; ``deleted`` rows drop out unless ``include_deleted``)."""
        cols = list(columns) if columns else list(STATE_COLUMNS)
        unknown = [c for c in cols if c not in STATE_COLUMNS]
        if unknown:
            raise StateError(f"unknown state column(s) {', '.join(unknown)}")
        with self.local_files(work_dir) as (snap, commits), _duckdb(work_dir, memory_limit) as con:
            sql = fold_sql(snap, commits, cols, include_deleted=include_deleted)
            if sql is None:
                return empty_state().select(cols)
            table = con.sql(sql).to_arrow_table()
        return table.cast(pa.schema([STATE_SCHEMA.field(c) for c in cols]))

    def compact(self, *, work_dir: Path | None = None, memory_limit: str = "1GB") -> int:
        """Fold the commits into a new snapshot, then remove them. Returns rows kept.

        Crash-safe: the snapshot records the last commit it folded, so commit files a
        killed compaction left behind are skipped, not applied twice.
        """
        with self.local_files(work_dir) as (snap, commits):
            if not commits:
                return 0 if snap is None else pq.ParquetFile(snap).metadata.num_rows
            names = [c.name.split("__")[-1] for c in commits]
            with _duckdb(work_dir, memory_limit) as con:
                sql = fold_sql(snap, commits, list(STATE_COLUMNS), include_deleted=False)
                assert sql is not None
                # Streamed batch by batch into the new snapshot: a million-row state with
                # payloads is hundreds of MB as one Arrow table.
                reader = con.sql(sql).to_arrow_reader(COMPACT_BATCH_ROWS)
                kept = self._write_atomic(SNAPSHOT_NAME, reader, {FOLDED_KEY: names[-1].encode()})
        kill_point("state_compact")  # test hook: snapshot written, commits not yet removed
        # Everything up to the folded mark goes, including files an earlier compaction
        # was killed before removing.
        self._delete([f"{COMMITS_DIR}/{c}" for c in self.commit_files() if c <= names[-1]])
        return kept

    def _delete(self, rels: list[str]) -> None:
        if not rels:
            return
        if not self.is_s3:
            for rel in rels:
                with suppress(FileNotFoundError):
                    os.unlink(self._path(rel))
            return
        # boto3, not pyarrow: pyarrow's delete_file writes a "directory marker" object to
        # keep the emptied prefix alive, which would litter the bucket.
        client = self._client()
        keys = [f"{self._key_prefix}/{rel}" for rel in rels]
        for i in range(0, len(keys), 1000):
            chunk = keys[i : i + 1000]
            client.delete_objects(
                Bucket=self._bucket,
                Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True},
            )

    def clear(self) -> None:
        """Forget everything synced for this model (used by tests and a reset command)."""
        with suppress(FileNotFoundError, OSError):
            self._fs.delete_dir(self._base)


@contextmanager
def _duckdb(work_dir: Path | None, memory_limit: str) -> Iterator[duckdb.DuckDBPyConnection]:
    con = duckdb.connect(":memory:")
    try:
        con.execute(f"SET memory_limit = '{_safe_setting(memory_limit)}'")
        spill = Path(work_dir) if work_dir else Path(tempfile.gettempdir())
        con.execute(f"SET temp_directory = '{_sql_str(str(spill / 'duckdb_spill'))}'")
        yield con
    finally:
        con.close()


_SEQ_RE = re.compile(r"^s(\d{12})-")


def _seq_of(name: str) -> int:
    """The sequence number of a commit file name (0 for names of the earlier scheme)."""
    match = _SEQ_RE.match(name)
    return int(match.group(1)) if match else 0


def _s3_code(exc: BaseException) -> str | None:
    return getattr(exc, "response", {}).get("Error", {}).get("Code")


def _safe_setting(value: str) -> str:
    if not re.fullmatch(r"[0-9.]+\s*[KMGT]?i?B", value.strip(), flags=re.IGNORECASE):
        raise StateError(f"memory limit {value!r} should look like 1GB or 512MB")
    return value.strip()


def _sql_str(value: str) -> str:
    return value.replace("'", "''")


def fold_sql(
    snapshot: Path | None,
    commits: list[Path],
    columns: list[str],
    *,
    include_deleted: bool = False,
) -> str | None:
    """DuckDB SQL folding snapshot + commits (in list order) into one row per pk.

    Files read later win; within a file the last row for a pk wins. Returns None when
    there is nothing to read.
    """
    files = ([snapshot] if snapshot is not None else []) + list(commits)
    if not files:
        return None
    file_list = ", ".join(f"'{_sql_str(p.as_posix())}'" for p in files)
    cols = ", ".join(f'"{c}"' for c in columns)
    cols = ", ".join(f'"{c}"' for c in columns)
    if snapshot is not None and not commits:
        # A snapshot alone is already one row per pk (compaction wrote it): no fold.
        where = "" if include_deleted else "WHERE status <> 'deleted'"
        return f"SELECT {cols} FROM read_parquet('{_sql_str(snapshot.as_posix())}') {where}"
    # file_index is DuckDB's position of the file in the list: later files win.
    keep = "" if include_deleted else "AND status <> 'deleted'"
    return f"""
        SELECT {cols} FROM (
            SELECT *, row_number() OVER (
                PARTITION BY pk ORDER BY file_index DESC, file_row_number DESC
            ) AS __rn
            FROM (
                SELECT *, file_index
                FROM read_parquet([{file_list}], file_row_number = true, union_by_name = true)
            )
        ) WHERE __rn = 1 {keep}
    """


__all__ = [
    "STATE_COLUMNS",
    "STATE_SCHEMA",
    "STATUSES",
    "StateError",
    "StateStore",
    "empty_state",
    "fold_sql",
    "normalize_state",
]
