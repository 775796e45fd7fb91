"""`--state FILE`: records, tokens and counters survive a restart.

A pickle snapshot written atomically (temp file, then rename), so a kill mid-write
leaves the previous snapshot intact. The server saves after changes, at most every
`interval` seconds (stretched when snapshots get slow), and once more on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from sf_activation.emulator.context import Context

FORMAT = 1


def load_state(path: Path, ctx: Context) -> bool:
    """Restore ctx from path; False when there is nothing usable to restore."""
    try:
        with path.open("rb") as handle:
            data: dict[str, Any] = pickle.load(handle)
    except FileNotFoundError:
        return False
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ValueError) as exc:
        raise ValueError(f"cannot read emulator state {path}: {exc}") from None
    if data.get("format") != FORMAT:
        raise ValueError(f"emulator state {path} has an unknown format")
    ctx.org.restore(data["org"])
    ctx.tokens.update(data["tokens"])
    ctx.api_calls = data["api_calls"]
    ctx.bulk_batches = data.get("bulk_batches", 0)
    return True


def save_state(path: Path, ctx: Context, tokens: dict[str, float] | None = None) -> None:
    data = {
        "format": FORMAT,
        "org": ctx.org.snapshot(),
        "tokens": dict(ctx.tokens) if tokens is None else tokens,
        "api_calls": ctx.api_calls,
        "bulk_batches": ctx.bulk_batches,
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as handle:
        pickle.dump(data, handle, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)


class Saver:
    """Saves ctx to path when it changed: periodically, and at the end."""

    def __init__(self, path: Path, ctx: Context, interval: float = 1.0) -> None:
        self.path = path
        self.ctx = ctx
        self.interval = interval
        self._seen = self._marker()

    def _marker(self) -> tuple[int, int, int]:
        return (self.ctx.org.version, self.ctx.tokens_version, self.ctx.api_calls)

    async def _loop(self) -> None:
        delay = self.interval
        while True:
            await asyncio.sleep(delay)
            marker = self._marker()
            if marker == self._seen:
                continue
            started = time.monotonic()
            tokens = dict(self.ctx.tokens)  # copied on the loop: tokens change there
            await asyncio.to_thread(save_state, self.path, self.ctx, tokens)
            self._seen = marker
            # Big orgs take longer to pickle: save less often rather than hog a core.
            delay = max(self.interval, 5 * (time.monotonic() - started))

    def save_now(self) -> None:
        save_state(self.path, self.ctx)
        self._seen = self._marker()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        task = asyncio.create_task(self._loop())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self.save_now()
