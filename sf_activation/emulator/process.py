"""Run the emulator as a child process and wait until it accepts requests.

For programs that need a Salesforce to talk to for a while — `make demo`, the benchmarks —
without a terminal of its own. (Tests use sf_activation_tests/support/emulator.py, which
adds test-only helpers around the same command.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class EmulatorDidNotStart(RuntimeError):
    pass


@contextmanager
def emulator_process(
    work_dir: Path, *flags: str, start_timeout_s: float = 30.0
) -> Iterator[dict[str, Any]]:
    """Yield the ready file's `{instance_url, access_token, ca_bundle}`; stop it on exit.

    Its certificate and log go under `work_dir` (the log is `work_dir/emulator.log`).
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    ready = work_dir / "emulator-ready.json"
    ready.unlink(missing_ok=True)
    command = [sys.executable, "-m", "sf_activation", "emulator", "--port", "0"]
    command += ["--ready-file", str(ready), "--tls-dir", str(work_dir / "emulator-tls"), *flags]
    log_path = work_dir / "emulator.log"
    with log_path.open("wb") as log:
        # Its own session: a Ctrl-C meant for the caller reaches it only through our cleanup.
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + start_timeout_s
        while not ready.exists() or not ready.read_text().strip():
            if process.poll() is not None or time.monotonic() > deadline:
                raise EmulatorDidNotStart(f"the emulator did not start; see {log_path}")
            time.sleep(0.05)
        yield json.loads(ready.read_text())
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
