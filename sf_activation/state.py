"""What Salesforce last accepted, per model: a Parquet snapshot plus per-batch commits.

Layout under ``{state_url}/{model}/`` (a local directory or ``s3://bucket/prefix``)::

    snapshot.parquet
    commits/s{seq:012d}-{run_id}.parquet
    ledger/…                       what is in flight (sf_activation/ledger.py)
    lease.*                        who may write (sf_activation/lease.py)
    key_salt.json                  only when keys are kept as digests (below)

``seq`` is one sequence per model that every worker agrees on: a run takes the next
number after the highest commit (or folded mark) in the store, and only the run holding
the model's lease writes. Order therefore never depends on a worker's clock (a worker
whose clock lagged used to name its commits before the last compaction's mark, and they
were skipped). Files named by the earlier scheme (``{stamp}-{run_id}-{n}.parquet``) sort
before every ``s…`` name, so a store written by an older version folds in the right order.

Rows: ``pk`` string, ``hash`` string, ``sf_id`` string|null, ``status``
(``synced``|``rejected``|``deleted``), ``updated_at`` timestamp (UTC), ``payload`` string|null
(compact JSON of the record as last sent; see docs/internals.md for why it is kept).
A model whose primary key maps to a `redact:` field keeps ``pk`` as ``h:`` + HMAC-SHA256
of the key (:class:`KeyDigest`), never the key itself.

Every write is atomic: locally a temp file, fsync, rename; on S3 one object upload, which
S3 makes visible only when complete. ``commit()`` is durable when it returns, so a run
killed between batches loses nothing it had confirmed. All folding (latest row per key)
runs in DuckDB over the Parquet files, never in a Python dict of rows.

Reads of an S3 state copy only the columns asked for (plus ``pk`` and ``status``) to local
disk, by range requests, row group by row group. ``compact()`` rewrites the snapshot only
when the commits left beside it are worth it (``SF_ACTIVATION_COMPACT_RATIO``): reads fold
commits anyway, so until then a run adds commit files and leaves the snapshot as it is.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import tempfile
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pydantic import SecretStr

from sf_activation.config import compact_ratio_from_env, state_key_from_env
from sf_activation.rejects import REDACTED
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
# When compaction rewrites the snapshot (compact()): a snapshot this small is always
# rewritten (cheap; a small model's state stays one file), a bigger one once its unfolded
# commits hold SF_ACTIVATION_COMPACT_RATIO of its rows, or once they are this many files
# (each costs a request or three per read, and a file for DuckDB to open).
COMPACT_MIN_SNAPSHOT_BYTES = 16 << 20
COMPACT_MAX_COMMIT_FILES = 500
# Reads of an S3 state: a file this small is fetched whole (reading its footer first
# would cost as many bytes); one whose wanted columns hold this share of its column bytes
# is fetched whole too (re-encoding it to drop the rest would save next to nothing).
WHOLE_FETCH_BYTES = 64 << 10
WHOLE_FETCH_SHARE = 0.9
FETCH_THREADS = 8  # files fetched from S3 at once
# The local copy of a projected file: written once and read once, so written cheaply.
LOCAL_COPY_WRITE_OPTIONS: dict[str, Any] = {"compression": "lz4", "use_dictionary": ["status"]}

_SAFE_ID_RE = re.compile(r"[^A-Za-z0-9_.-]+")
_MODEL_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")  # as models.MODEL_NAME_RE


class StateError(Exception):
    """State that cannot be read or written (bad URL, unreadable file, bad rows)."""


# -- primary keys kept as digests -------------------------------------------------------
# A model whose primary key maps to a `redact:` field (an e-mail address as the key) keeps
# no key in clear in its state: every `pk` (and every ledger entry's `__pk`) is
# `h:` + HMAC-SHA256 of the key under the model's digest key (see docs/internals.md).
# Every Parquet file such a store writes carries PK_FORM_KEY in its metadata; a file
# without it holds clear keys (written before the model redacted its key, or by an earlier
# version) and is digested as it is read, so whatever mix of forms a killed migration
# leaves still folds by one key.
PK_FORM_KEY = b"sf_activation.pk_form"
PK_DIGEST_FORM = b"hmac-sha256"
KEY_SALT_NAME = "key_salt.json"
DIGEST_PREFIX = "h:"
# The plan's column holding each row's key as state keeps it (only when keys are digests).
STATE_KEY_COLUMN = "__state_pk"
_DIGEST_PATTERN = r"^h:[0-9a-f]{64}$"
_KEY_CONTEXT = b"sf_activation primary key v1\0"
_CHECK_MESSAGE = b"sf_activation key check"
_KEY_TABLE = "__sfa_pk_key"
_SALT_FORMAT = 1


class KeyDigest:
    """HMAC-SHA256 of primary keys under one model's digest key, written `h:` + 64 hex.

    Computed in DuckDB SQL over every row (plans, folds, ledger entries), byte for byte
    what `hmac.new(key, pk.encode(), "sha256")` gives (docs/internals.md). The SQL reads
    the key from a temp table filled through a query parameter, so no key material is
    ever part of SQL text, which DuckDB echoes in some errors.
    """

    def __init__(self, key: bytes) -> None:
        block = key.ljust(64, b"\0")  # HMAC's key block (the key is 32 bytes)
        self._key = key
        self._inner = bytes(b ^ 0x36 for b in block)
        self._outer = bytes(b ^ 0x5C for b in block)

    def __repr__(self) -> str:
        return "KeyDigest(***)"

    @classmethod
    def derive(cls, salt: bytes, secret: SecretStr | None) -> KeyDigest:
        """The model's digest key: its salt, keyed by SF_ACTIVATION_STATE_KEY when set."""
        material = secret.get_secret_value().encode() if secret is not None else b""
        return cls(hmac.new(material, _KEY_CONTEXT + salt, hashlib.sha256).digest())

    def check(self) -> str:
        """A fingerprint of the key, kept beside the salt: a run whose key differs (another
        SF_ACTIVATION_STATE_KEY) is refused instead of seeing every row as new."""
        return hmac.new(self._key, _CHECK_MESSAGE, hashlib.sha256).hexdigest()[:16]

    def install(self, con: duckdb.DuckDBPyConnection) -> None:
        """Make :meth:`sql` valid on `con` (a one-row temp table, never in a database file)."""
        con.execute(f"CREATE OR REPLACE TEMP TABLE {_KEY_TABLE} (i BLOB, o BLOB)")
        con.execute(f"INSERT INTO {_KEY_TABLE} VALUES (?, ?)", [self._inner, self._outer])

    @staticmethod
    def sql(expr: str) -> str:
        """DuckDB expression: the digest of `expr` as text (null stays null), on a
        connection :meth:`install` ran on."""
        text = f"encode(({expr})::VARCHAR)"
        inner = f"unhex(sha256((SELECT i FROM {_KEY_TABLE}) || {text}))"
        return f"('{DIGEST_PREFIX}' || sha256((SELECT o FROM {_KEY_TABLE}) || {inner}))"


def is_digest(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Which values are digests as KeyDigest writes them."""
    return pc.fill_null(pc.match_substring_regex(values, _DIGEST_PATTERN), False)


def state_keys(batch: pa.RecordBatch | pa.Table) -> pa.Array | pa.ChunkedArray:
    """Each planned row's key as state keeps it: the digest when the store digests keys,
    else the key itself."""
    names = batch.schema.names
    return batch.column(STATE_KEY_COLUMN if STATE_KEY_COLUMN in names else "__pk")


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
            col = pa.repeat(now, n)
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

    def __init__(
        self,
        state_url: str,
        model: str,
        *,
        run_id: str | None = None,
        redact_key: bool = False,
        redact: Iterable[str] = (),
        state_key: SecretStr | None = None,
        compact_ratio: float | None = None,
    ) -> None:
        """`redact_key`: the model's primary key maps to a `redact:` field, so keys are kept
        as digests (:attr:`digests_keys`). `redact`: the model's `redact:` fields, masked in
        the payloads of rows whose keys are digested as read (written before the model
        redacted its key: the key's own field may be in clear there). `state_key`:
        SF_ACTIVATION_STATE_KEY (read from the environment when not given), mixed into
        those digests. `compact_ratio`: SF_ACTIVATION_COMPACT_RATIO (read from the
        environment when not given), when :meth:`compact` rewrites the snapshot."""
        if not _MODEL_RE.match(model):
            raise StateError(f"model name {model!r} is not a safe identifier")
        self.state_url = state_url
        self.model = model
        self.run_id = _SAFE_ID_RE.sub("_", run_id or uuid.uuid4().hex)[:64]
        self._seq: int | None = None  # the last sequence number used; read on first commit
        self._s3_client = None
        self._redact_key = redact_key
        self._redact = sorted(set(redact))
        self._state_key = state_key if state_key is not None else state_key_from_env()
        self.compact_ratio = (
            compact_ratio if compact_ratio is not None else compact_ratio_from_env()
        )
        self._digests: bool | None = None  # decided on first use (a look at the store)
        self._key: KeyDigest | None = None
        self._unsaved_salt: bytes | None = None  # a new salt's file, written before any digest
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
        return [i.base_name for i in self._commit_infos()]

    def _commit_infos(self) -> list[pafs.FileInfo]:
        """The commit files (name and size), in the order they were written."""
        selector = pafs.FileSelector(self._path(COMMITS_DIR), allow_not_found=True)
        try:
            infos = self._fs.get_file_info(selector)
        except OSError as exc:
            raise StateError(f"cannot list {self.url}/{COMMITS_DIR}: {exc}") from exc
        files = [
            i for i in infos if i.type == pafs.FileType.File and i.base_name.endswith(".parquet")
        ]
        return sorted(files, key=lambda i: i.base_name)

    def _snapshot_exists(self) -> bool:
        return self._exists(SNAPSHOT_NAME)

    def _exists(self, rel: str) -> bool:
        return self._info(rel) is not None

    def _info(self, rel: str) -> pafs.FileInfo | None:
        """The file's info (its size), or None when there is none."""
        try:
            info = self._fs.get_file_info(self._path(rel))
        except OSError as exc:
            raise StateError(f"cannot read {self.url}/{rel}: {exc}") from exc
        return info if info.type == pafs.FileType.File else None

    # ------------------------------------------------------------ digested keys

    @property
    def digests_keys(self) -> bool:
        """Whether this store keeps primary keys as digests: the model redacts its key, or
        the store already does (it has a salt). A model that stops redacting its key keeps
        digests: one cannot be turned back into its key, and clear keys would match none
        of the state's rows (every row sent again, an insert model's created twice)."""
        if self._digests is None:
            self._digests = self._redact_key or self._exists(KEY_SALT_NAME)
        return self._digests

    def key_digest(self) -> KeyDigest:
        """The digest of this model's keys, from the salt kept in the store; a store that
        has none gets a new salt, written before the first file holding a digest."""
        if self._key is not None:
            return self._key
        try:
            raw = self.read_bytes(KEY_SALT_NAME)
        except FileNotFoundError:
            salt = secrets.token_bytes(32)
            self._key = KeyDigest.derive(salt, self._state_key)
            self._unsaved_salt = self._salt_file(salt, self._key)
            return self._key
        except OSError as exc:
            raise StateError(f"cannot read {self.url}/{KEY_SALT_NAME}: {exc}") from exc
        self._key = self._key_from(raw)
        return self._key

    def _salt_file(self, salt: bytes, key: KeyDigest) -> bytes:
        body = {
            "format": _SALT_FORMAT,
            "algorithm": PK_DIGEST_FORM.decode(),
            "salt": salt.hex(),
            # Whether SF_ACTIVATION_STATE_KEY was mixed in (never its value): for the message
            # when a worker's setting differs.
            "state_key": self._state_key is not None,
            "check": key.check(),
        }
        return (json.dumps(body, indent=2) + "\n").encode()

    def _key_from(self, raw: bytes) -> KeyDigest:
        where = f"{self.url}/{KEY_SALT_NAME}"
        try:
            body = json.loads(raw)
            salt = bytes.fromhex(body["salt"])
            keyed, check = bool(body["state_key"]), str(body["check"])
            if body.get("format") != _SALT_FORMAT or len(salt) != 32:
                raise ValueError("unknown format")
        except (ValueError, KeyError, TypeError) as exc:
            raise StateError(
                f"{where} is not readable ({type(exc).__name__}); restore it from a backup: "
                "without it no primary key in this state can be matched"
            ) from None
        key = KeyDigest.derive(salt, self._state_key)
        if not hmac.compare_digest(key.check(), check):
            now = self._state_key is not None
            if keyed and now:
                how = "with another SF_ACTIVATION_STATE_KEY"
            elif keyed:
                how = "with SF_ACTIVATION_STATE_KEY, which is not set here"
            else:
                how = "without SF_ACTIVATION_STATE_KEY, which is set here"
            way_out = "unset it" if not keyed else "set it to the value the state was made with"
            raise StateError(
                f"{where}: the primary keys in this state were digested {how}, so no row would "
                f"match and every row would be sent as new; nothing was sent. {way_out[0].upper()}"
                f"{way_out[1:]} (on every worker)"
            )
        return key

    def _save_salt(self) -> None:
        """Write a new salt once, before anything digested with it, and never over another
        run's: if one appeared meanwhile, this run's digests are not the store's."""
        body = self._unsaved_salt
        if body is None:
            return
        if not self._create_once(KEY_SALT_NAME, body) and self.read_bytes(KEY_SALT_NAME) != body:
            raise self._salt_raced()
        self._unsaved_salt = None

    def _salt_raced(self) -> StateError:
        return StateError(
            f"{self.url}/{KEY_SALT_NAME} was created by another run while this one ran; "
            "nothing was written: run again"
        )

    def _create_once(self, rel: str, data: bytes) -> bool:
        """Write a small file durably unless it exists (then False)."""
        if self.is_s3:
            try:
                self._client().put_object(
                    Bucket=self._bucket, Key=f"{self._key_prefix}/{rel}", Body=data, IfNoneMatch="*"
                )
            except Exception as exc:  # botocore raises many types
                if _s3_code(exc) in ("PreconditionFailed", "ConditionalRequestConflict"):
                    return False
                raise StateError(f"cannot write {self.url}/{rel}: {exc}") from exc
            return True
        assert self._local_root is not None
        target = self._local_root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, target)  # fails when the file exists: no run overwrites a salt
            except FileExistsError:
                return False
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(target.parent)
        return True

    def _before_write(self, metadata: dict | None) -> dict | None:
        """Metadata for a Parquet file about to be written; a new salt is saved first."""
        if not self.digests_keys:
            return metadata
        self.key_digest()
        self._save_salt()
        return {**(metadata or {}), PK_FORM_KEY: PK_DIGEST_FORM}

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
        metadata = self._before_write(metadata)
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
        if self.digests_keys and not pc.all(is_digest(table.column("pk"))).as_py():
            # Callers pass keys as state keeps them (settle.state_rows, removed rows): a
            # clear key here is a bug, and it is never written (nor shown).
            raise StateError(
                f"{self.url}: refusing to commit a primary key in clear to a state that keeps "
                "them as digests; nothing was written"
            )
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
        self._before_write(None)  # e.g. a staged plan's info: its digests need the salt
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

    def upload_file(self, local: Path, rel: str) -> None:
        """Copy a local file of any size to ``rel``, streamed (the staged plan); on S3 one
        (multipart) upload, visible only once complete; locally a temp file renamed."""
        if self.is_s3:
            try:
                self._client().upload_file(str(local), self._bucket, f"{self._key_prefix}/{rel}")
            except Exception as exc:  # botocore raises many types; all mean "not written"
                raise StateError(f"cannot write {self.url}/{rel}: {exc}") from exc
            return
        assert self._local_root is not None
        target = self._local_root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        try:
            shutil.copyfile(local, tmp)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)

    def download_file(self, rel: str, local: Path) -> None:
        """Copy ``rel`` to a local file, streamed; FileNotFoundError when there is none."""
        info = self._fs.get_file_info(self._path(rel))
        if info.type != pafs.FileType.File:
            raise FileNotFoundError(f"{self.url}/{rel}")
        try:
            with self._fs.open_input_stream(self._path(rel)) as src, open(local, "wb") as out:
                shutil.copyfileobj(src, out, 8 << 20)
        except OSError as exc:
            raise StateError(f"cannot read {self.url}/{rel}: {exc}") from exc

    def list_dirs(self, directory: str) -> list[tuple[str, float]]:
        """Sub-directory names under ``directory`` with their newest file's age basis
        (modification time, seconds since the epoch; 0 when unknown), sorted by name."""
        selector = pafs.FileSelector(self._path(directory), allow_not_found=True, recursive=True)
        try:
            infos = self._fs.get_file_info(selector)
        except OSError as exc:
            raise StateError(f"cannot list {self.url}/{directory}: {exc}") from exc
        base = self._path(directory).rstrip("/") + "/"
        newest: dict[str, float] = {}
        for info in infos:
            if info.type != pafs.FileType.File or not info.path.startswith(base):
                continue
            top = info.path[len(base) :].split("/", 1)[0]
            mtime = info.mtime.timestamp() if info.mtime is not None else 0.0
            newest[top] = max(newest.get(top, 0.0), mtime)
        return sorted(newest.items())

    def delete_tree(self, directory: str) -> None:
        """Remove ``directory`` and everything under it (a consumed staged plan)."""
        rels = []
        selector = pafs.FileSelector(self._path(directory), allow_not_found=True, recursive=True)
        base = self._path("")
        for info in self._fs.get_file_info(selector):
            if info.type == pafs.FileType.File:
                rels.append(info.path[len(base) :])
        self._delete(rels)
        if not self.is_s3:
            shutil.rmtree(self._path(directory), ignore_errors=True)

    def version(self) -> int:
        """A number that grows with every commit to this state (its sequence): a plan made
        at one version is stale once the state has another."""
        return self._last_seq()

    # ------------------------------------------------------------------ reads

    @contextmanager
    def local_files(
        self, work_dir: Path | None = None, columns: Iterable[str] | None = None
    ) -> Iterator[tuple[Path | None, list[Path]]]:
        """The snapshot (or None) and the unfolded commit files as local paths, in order.

        On S3 they are copied into a temp directory under ``work_dir`` that is removed on
        exit: with `columns`, only those (and ``pk`` and ``status``, which folding needs),
        read by range requests row group by row group into a local Parquet file that keeps
        the original's metadata (its folded mark and key form); every column otherwise.
        Locally they are the files themselves (DuckDB reads only the columns it needs).
        """
        infos = self._commit_infos()
        snap_info = self._info(SNAPSHOT_NAME)
        folded = ""
        if snap_info is not None:
            meta = self._read_snapshot_metadata()
            folded = meta.get(FOLDED_KEY, b"").decode()
        infos = [i for i in infos if i.base_name > folded]
        if not self.is_s3:
            assert self._local_root is not None
            snap = self._local_root / SNAPSHOT_NAME if snap_info is not None else None
            yield snap, [self._local_root / COMMITS_DIR / i.base_name for i in infos]
            return
        wanted = None if columns is None else {*columns, "pk", "status"}
        tmpdir = Path(tempfile.mkdtemp(prefix="sfa-state-", dir=work_dir))
        try:
            jobs = [(f"{COMMITS_DIR}/{i.base_name}", i.size) for i in infos]
            if snap_info is not None:
                jobs.insert(0, (SNAPSHOT_NAME, snap_info.size))

            def fetch(job: tuple[str, int | None]) -> Path | None:
                rel, size = job
                dest = tmpdir / rel.replace("/", "__")
                try:
                    self._fetch(rel, size, dest, wanted)
                except FileNotFoundError:
                    if rel == SNAPSHOT_NAME:
                        raise StateError(
                            f"{self.url}/{SNAPSHOT_NAME} vanished while read"
                        ) from None
                    # A concurrent compaction removed a folded commit; it is in the snapshot.
                    return None
                except OSError as exc:
                    raise StateError(f"cannot read {self.url}/{rel}: {exc}") from exc
                return dest

            local = _in_order(fetch, jobs)
            snap = local.pop(0) if snap_info is not None else None
            yield snap, [p for p in local if p is not None]
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)

    def _fetch(self, rel: str, size: int | None, dest: Path, wanted: set[str] | None) -> None:
        """Copy the S3 file `rel` to `dest`: whole, or only the `wanted` columns."""
        path = self._path(rel)
        if wanted is None or (size is not None and size <= WHOLE_FETCH_BYTES):
            with self._fs.open_input_stream(path) as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out, 8 << 20)
            return
        # A random-access file: pyarrow reads the footer, then each column chunk wanted, by
        # ranged GETs (pre_buffer coalesces neighbouring chunks of a row group into one).
        with self._fs.open_input_file(path) as src:
            pf = pq.ParquetFile(src, pre_buffer=True)
            keep = [n for n in pf.schema_arrow.names if n in wanted]
            if _column_share(pf.metadata, keep) >= WHOLE_FETCH_SHARE:
                src.seek(0)
                with open(dest, "wb") as out:
                    shutil.copyfileobj(src, out, 8 << 20)
                return
            _copy_columns(pf, keep, dest)

    def _read_snapshot_metadata(self) -> dict[bytes, bytes]:
        try:
            with self._fs.open_input_file(self._path(SNAPSHOT_NAME)) as fh:
                return dict(pq.read_schema(fh).metadata or {})
        except OSError as exc:
            raise StateError(f"cannot read {self.url}/{SNAPSHOT_NAME}: {exc}") from exc

    def _footers(self, rels: list[str]) -> list[pq.FileMetaData | None]:
        """The Parquet footers of `rels` (None for a file that is gone), read by range
        requests: row counts and metadata without the rows."""

        def footer(rel: str) -> pq.FileMetaData | None:
            try:
                with self._fs.open_input_file(self._path(rel)) as fh:
                    return pq.read_metadata(fh)
            except FileNotFoundError:
                return None
            except OSError as exc:
                raise StateError(f"cannot read {self.url}/{rel}: {exc}") from exc

        return _in_order(footer, rels) if self.is_s3 else [footer(r) for r in rels]

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
        with (
            _duckdb(work_dir, memory_limit) as con,
            self.folded(con, cols, include_deleted=include_deleted, work_dir=work_dir) as sql,
        ):
            if sql is None:
                return empty_state().select(cols)
            table = con.sql(sql).to_arrow_table()
        return table.cast(pa.schema([STATE_SCHEMA.field(c) for c in cols]))

    @contextmanager
    def folded(
        self,
        con: duckdb.DuckDBPyConnection,
        columns: list[str],
        *,
        include_deleted: bool = False,
        work_dir: Path | None = None,
    ) -> Iterator[str | None]:
        """SQL folding the state into one row per key (:func:`fold_sql`), valid on `con`
        inside the block; None when there is no state. Keys come in the store's form: a
        store that keeps digests digests the clear keys of files written before it did.
        On S3 only `columns` (with ``pk`` and ``status``) are fetched (:meth:`local_files`):
        a read that leaves out ``payload`` transfers a small part of the state."""
        with self.local_files(work_dir, columns) as (snap, commits):
            clear = self._clear_files(con, snap, commits)
            if clear:
                self.key_digest().install(con)
            yield fold_sql(
                snap,
                commits,
                columns,
                include_deleted=include_deleted,
                digest=clear,
                mask=self._redact,
            )

    def _clear_files(
        self, con: duckdb.DuckDBPyConnection, snap: Path | None, commits: list[Path]
    ) -> list[Path]:
        """The files holding keys in clear, in a store that keeps digests (each file's
        form is in its Parquet metadata). Digests without the salt they were made with
        are refused: no key would match them."""
        files = ([snap] if snap is not None else []) + list(commits)
        if not files:
            return []
        if not self.digests_keys:
            # A store keeping clear keys reads no more than before: only the snapshot's
            # form is checked (a lost salt shows there).
            if snap is not None and PK_FORM_KEY in (pq.read_schema(snap).metadata or {}):
                raise self._lost_salt()
            return []
        self.key_digest()
        listing = ", ".join(f"'{_sql_str(p.as_posix())}'" for p in files)
        digested = {
            row[0]
            for row in con.execute(
                f"SELECT DISTINCT file_name FROM parquet_kv_metadata([{listing}]) "
                "WHERE key = ?::BLOB",
                [PK_FORM_KEY],
            ).fetchall()
        }
        if digested and self._unsaved_salt is not None:
            raise self._salt_raced() if self._exists(KEY_SALT_NAME) else self._lost_salt()
        return [p for p in files if p.as_posix() not in digested]

    def digest_entry(self, rows: pa.Table) -> pa.Table:
        """Planned rows written with clear keys (a ledger entry from before the model
        redacted its key) as this store keeps them: `__pk` digested, the `redact:` fields
        of `__payload` masked (it becomes the state's payload once the outcome is known).
        Other columns are left exactly as they are (the reconciliation compares them)."""
        con = duckdb.connect(":memory:")
        try:
            self.key_digest().install(con)
            con.register("rows_in", rows)
            exprs = [f"{KeyDigest.sql('__pk')} AS k"]
            if "__payload" in rows.column_names:
                exprs.append(f"{_masked_payload_sql(self._redact, '__payload')} AS p")
            out = con.sql(f"SELECT {', '.join(exprs)} FROM rows_in").to_arrow_table()
        finally:
            con.close()
        rows = rows.set_column(
            rows.schema.get_field_index("__pk"), "__pk", out.column("k").cast(pa.string())
        )
        if "__payload" in rows.column_names:
            rows = rows.set_column(
                rows.schema.get_field_index("__payload"),
                "__payload",
                out.column("p").cast(pa.string()),
            )
        return rows

    def _lost_salt(self) -> StateError:
        return StateError(
            f"{self.url} holds digests of primary keys but not {KEY_SALT_NAME}, the salt they "
            "were made with: restore that file from a backup (without it no row matches: "
            "every row would be sent again, an insert model's records created twice)"
        )

    def compact(
        self, *, work_dir: Path | None = None, memory_limit: str = "1GB", force: bool = False
    ) -> int:
        """Fold the commits into a new snapshot when that is due, then remove them. Returns
        the rows of the snapshot (as it stands when compaction was not due).

        Due (:meth:`compaction_due`) when there is no snapshot yet, the snapshot is small
        (under :data:`COMPACT_MIN_SNAPSHOT_BYTES`), the unfolded commits hold at least
        :attr:`compact_ratio` of its rows or are more than :data:`COMPACT_MAX_COMMIT_FILES`
        files, or a file holds keys in clear in a store that keeps digests (the migration
        is never put off); `force` folds whatever commits there are. Otherwise the snapshot
        is left as it is, not downloaded nor uploaded again: reads fold the commits, so what
        the state says is the same. Deciding reads only the files' footers.

        Crash-safe: the snapshot records the last commit it folded, so commit files a
        killed compaction left behind are skipped, not applied twice, and removed by the
        next call whether or not it compacts.
        """
        due, rows, leftover = self._compaction_check(force)
        if not due:
            # Folded by a compaction killed before it removed them: the snapshot has them.
            self._delete([f"{COMMITS_DIR}/{n}" for n in leftover])
            return rows
        with (
            self.local_files(work_dir) as (snap, commits),
            _duckdb(work_dir, memory_limit) as con,
        ):
            # A store that keeps digests rewrites a snapshot of clear keys even when no
            # commit is left (an unchanged model's first run after it redacted its key).
            clear = self._clear_files(con, snap, commits)
            if not commits and not clear:
                return 0 if snap is None else pq.ParquetFile(snap).metadata.num_rows
            if commits:
                mark = commits[-1].name.split("__")[-1].encode()
            else:
                assert snap is not None
                mark = (pq.read_schema(snap).metadata or {}).get(FOLDED_KEY, b"")
            if clear:
                self.key_digest().install(con)
            sql = fold_sql(snap, commits, list(STATE_COLUMNS), digest=clear, mask=self._redact)
            assert sql is not None
            # Streamed batch by batch into the new snapshot: a million-row state with
            # payloads is hundreds of MB as one Arrow table.
            reader = con.sql(sql).to_arrow_reader(COMPACT_BATCH_ROWS)
            kept = self._write_atomic(SNAPSHOT_NAME, reader, {FOLDED_KEY: mark})
        kill_point("state_compact")  # test hook: snapshot written, commits not yet removed
        # Everything up to the folded mark goes, including files an earlier compaction
        # was killed before removing.
        if commits:
            folded = mark.decode()
            self._delete([f"{COMMITS_DIR}/{c}" for c in self.commit_files() if c <= folded])
        return kept

    def compaction_due(self, *, force: bool = False) -> bool:
        """Whether :meth:`compact` would rewrite the snapshot now (see there), from the
        listing and the Parquet footers only."""
        return self._compaction_check(force)[0]

    def _compaction_check(self, force: bool) -> tuple[bool, int, list[str]]:
        """(due, the snapshot's rows, commit files at or before its folded mark)."""
        snap_info = self._info(SNAPSHOT_NAME)
        snap_meta = self._footers([SNAPSHOT_NAME])[0] if snap_info is not None else None
        if snap_info is not None and snap_meta is None:
            raise StateError(f"{self.url}/{SNAPSHOT_NAME} vanished while read")
        rows = snap_meta.num_rows if snap_meta is not None else 0
        kv = dict(snap_meta.metadata or {}) if snap_meta is not None else {}
        folded = kv.get(FOLDED_KEY, b"").decode()
        infos = self._commit_infos()
        leftover = [i.base_name for i in infos if i.base_name <= folded] if snap_meta else []
        commits = [i.base_name for i in infos if i.base_name > folded]
        footers: list[pq.FileMetaData | None] | None = None
        if not self.digests_keys:
            # As _clear_files: digests in a store without the salt they were made with.
            if PK_FORM_KEY in kv:
                raise self._lost_salt()
        else:
            self.key_digest()
            footers = self._footers([f"{COMMITS_DIR}/{c}" for c in commits])
            forms = [kv] if snap_meta is not None else []
            forms += [dict(f.metadata or {}) for f in footers if f is not None]
            digested = [PK_FORM_KEY in m for m in forms]
            if any(digested) and self._unsaved_salt is not None:
                raise self._salt_raced() if self._exists(KEY_SALT_NAME) else self._lost_salt()
            if not all(digested):
                return True, rows, leftover  # keys in clear: digested now, whatever the size
        if not commits:
            return False, rows, leftover
        if force or snap_info is None or snap_meta is None:
            return True, rows, leftover
        if (snap_info.size or 0) < COMPACT_MIN_SNAPSHOT_BYTES:
            return True, rows, leftover
        if len(commits) > COMPACT_MAX_COMMIT_FILES:
            return True, rows, leftover
        if footers is None:
            footers = self._footers([f"{COMMITS_DIR}/{c}" for c in commits])
        pending = sum(f.num_rows for f in footers if f is not None)
        return pending >= self.compact_ratio * rows, rows, leftover

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


def _in_order(fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
    """`fn` of each item, in the items' order, a few at once (S3 requests: latency)."""
    if len(items) <= 1:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(min(FETCH_THREADS, len(items)), thread_name_prefix="sfa-state") as pool:
        return list(pool.map(fn, items))


def _column_share(meta: pq.FileMetaData, keep: list[str]) -> float:
    """The share of the file's column bytes (compressed) that the columns `keep` hold."""
    wanted = set(keep)
    total = kept = 0
    for i in range(meta.num_row_groups):
        group = meta.row_group(i)
        for j in range(group.num_columns):
            chunk = group.column(j)
            total += chunk.total_compressed_size
            if chunk.path_in_schema.split(".", 1)[0] in wanted:
                kept += chunk.total_compressed_size
    return kept / total if total else 1.0


def _copy_columns(pf: pq.ParquetFile, keep: list[str], dest: Path) -> None:
    """Write the columns `keep` of `pf` to the local Parquet file `dest`, one row group at
    a time (memory: one row group's columns), with the file's key-value metadata (folded
    mark, key form), which the reads check."""
    kv = {k: v for k, v in (pf.metadata.metadata or {}).items() if k != b"ARROW:schema"}
    source = pf.schema_arrow
    schema = pa.schema([source.field(c) for c in keep], metadata=kv)
    with pq.ParquetWriter(dest, schema, **LOCAL_COPY_WRITE_OPTIONS) as writer:
        for i in range(pf.num_row_groups):
            for batch in pf.iter_batches(
                batch_size=COMPACT_BATCH_ROWS, row_groups=[i], columns=keep
            ):
                writer.write_batch(batch)


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


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _masked_payload_sql(fields: Collection[str], column: str = "payload") -> str:
    """DuckDB expression: `column` (a payload) with the values of `fields` masked as the
    sync masks them (null stays null), by exact text replacement: a member `"F":value`
    occurs once outside strings (quotes inside strings are escaped), and DuckDB writes a
    value as json_extract re-reads it. No JSON re-serialisation, which would round exact
    numbers."""
    out = _q(column)
    for field in sorted(fields):
        member = "'" + _sql_str(json.dumps(field) + ":") + "'"
        value = f"json_extract({_q(column)}, '{_sql_str('$.' + json.dumps(field))}')"
        # '' (no match) for an absent or null value: replace() leaves the text as it is.
        found = f"coalesce(CASE WHEN json_type({value}) <> 'NULL' THEN {member} || {value}::VARCHAR END, '')"
        masked = "'" + _sql_str(json.dumps(field) + ":" + json.dumps(REDACTED)) + "'"
        out = f"replace({out}, {found}, {masked})"
    return out


def fold_sql(
    snapshot: Path | None,
    commits: list[Path],
    columns: list[str],
    *,
    include_deleted: bool = False,
    digest: Collection[Path] = (),
    mask: Collection[str] = (),
) -> str | None:
    """DuckDB SQL folding snapshot + commits (in list order) into one row per pk.

    Files read later win; within a file the last row for a pk wins. Returns None when
    there is nothing to read. The keys of the files in `digest` (clear keys in a store
    that keeps digests) are digested before folding, so a key meets its own digest, and
    the `mask` fields of their payloads masked; the SQL then needs a connection
    :meth:`KeyDigest.install` ran on. The files need `columns`, ``pk`` and ``status``.

    The snapshot is already one row per pk (compaction wrote it): only the commits are
    folded (a window over their rows), and the snapshot's rows whose pk no commit holds
    are kept by an anti-join, a hash of the commits' keys probed once per snapshot row. A
    read is then about as cheap with commits left beside a large snapshot as without
    (compaction can wait), where a window over snapshot and commits sorts every row.
    """
    if snapshot is None and not commits:
        return None
    wanted = set(digest)
    needed = list(dict.fromkeys([*columns, "pk", "status"]))
    out = ", ".join(_q(c) for c in columns)
    keep = "" if include_deleted else "WHERE status <> 'deleted'"

    def exprs(clear: str | None) -> str:
        """The needed columns, migrated where `clear` (an SQL condition) holds."""

        def one(c: str) -> str:
            if clear is None or c not in ("pk", "payload"):
                return _q(c)
            new = KeyDigest.sql("pk") if c == "pk" else _masked_payload_sql(mask)
            return new if clear == "true" else f"CASE WHEN {clear} THEN {new} ELSE {_q(c)} END"

        return ", ".join(f"{one(c)} AS {_q(c)}" for c in needed)

    snap_rows = ""
    if snapshot is not None:
        where = "true" if snapshot in wanted else None
        snap_rows = f"SELECT {exprs(where)} FROM read_parquet('{_sql_str(snapshot.as_posix())}')"
        if not commits:
            return f"SELECT {out} FROM ({snap_rows}) {keep}"
    # file_index is DuckDB's position of the file in the list: later files win.
    file_list = ", ".join(f"'{_sql_str(p.as_posix())}'" for p in commits)
    digested = [str(i) for i, p in enumerate(commits) if p in wanted]
    which = f"file_index IN ({', '.join(digested)})" if digested else None
    latest = f"""
        SELECT {", ".join(_q(c) for c in needed)} FROM (
            SELECT *, row_number() OVER (
                PARTITION BY pk ORDER BY file_index DESC, file_row_number DESC
            ) AS __rn
            FROM (
                SELECT {exprs(which)}, file_index, file_row_number
                FROM read_parquet([{file_list}], file_row_number = true, union_by_name = true)
            )
        ) WHERE __rn = 1
    """
    if snapshot is None:
        return f"SELECT {out} FROM ({latest}) {keep}"
    pk = "pk" if which is None else f"CASE WHEN {which} THEN {KeyDigest.sql('pk')} ELSE pk END"
    commit_keys = f"SELECT {pk} AS pk FROM read_parquet([{file_list}], union_by_name = true)"
    return f"""
        SELECT {out} FROM (
            SELECT __s.* FROM ({snap_rows}) AS __s
            ANTI JOIN ({commit_keys}) AS __c ON __s.pk = __c.pk
            UNION ALL
            {latest}
        ) {keep}
    """


__all__ = [
    "KEY_SALT_NAME",
    "PK_FORM_KEY",
    "STATE_COLUMNS",
    "STATE_KEY_COLUMN",
    "STATE_SCHEMA",
    "STATUSES",
    "KeyDigest",
    "StateError",
    "StateStore",
    "empty_state",
    "fold_sql",
    "is_digest",
    "normalize_state",
    "state_keys",
]
