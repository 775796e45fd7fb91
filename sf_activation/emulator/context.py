"""What every route shares: the org, issued tokens, faults, counters, settings."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sf_activation.emulator.faults import Faults
from sf_activation.emulator.org import Org

DEFAULT_DAILY_API_LIMIT = 15000
LATEST_API_VERSION = "62.0"
# Versions the org offers at /services/data/; any vNN.N path is served.
API_VERSIONS = [f"{v}.0" for v in range(31, 63)]


@dataclass
class Credentials:
    """Fixed credentials: each one set here must match; None accepts anything."""

    client_id: str | None = None
    client_secret: str | None = None
    username: str | None = None
    password: str | None = None
    refresh_token: str | None = None
    jwt_public_key: str | None = None  # PEM; JWT assertions are then signature-checked

    @property
    def fixed(self) -> bool:
        return any(v is not None for v in vars(self).values())


@dataclass
class Context:
    org: Org
    faults: Faults
    instance_url: str = ""
    daily_api_limit: int = DEFAULT_DAILY_API_LIMIT
    credentials: Credentials = field(default_factory=Credentials)
    # token -> epoch seconds when issued
    tokens: dict[str, float] = field(default_factory=dict)
    api_calls: int = 0
    requests_by_route: Counter[str] = field(default_factory=Counter)
    # Counters Bulk jobs and others may bump (shown in /limits/).
    bulk_batches: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Bumped when tokens or counters change, so persistence knows to save.
    tokens_version: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def issue_token(self, token: str) -> None:
        with self.lock:
            self.tokens[token] = time.time()
            self.tokens_version += 1

    def token_state(self, token: str | None) -> str:
        """'ok', 'expired' or 'unknown'."""
        if not token:
            return "unknown"
        issued = self.tokens.get(token)
        if issued is None:
            return "unknown"
        ttl = self.faults.spec.session_ttl
        if ttl is not None and time.time() - issued > ttl:
            return "expired"
        return "ok"

    def usage_header(self) -> str:
        return f"api-usage={self.api_calls}/{self.daily_api_limit}"
