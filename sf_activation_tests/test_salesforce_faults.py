"""Faults: lock errors, 503s and expiring sessions; every record lands once, every row is reported."""

from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pytest

from sf_activation.salesforce import RecordOutcome, SendRequest
from sf_activation_tests.support.emulator import start_emulator
from sf_activation_tests.support.salesforce_fixtures import fast_client

N = 10_000


def accounts(start: int, n: int) -> list[pa.RecordBatch]:
    keys = [f"F-{i}" for i in range(start, start + n)]
    batch = pa.RecordBatch.from_pydict(
        {
            "__key": keys,
            "External_Id__c": keys,
            "Name": [f"Faulty {i}" for i in range(start, start + n)],
            "NumberOfEmployees": pa.array(range(start, start + n), pa.int64()),
        }
    )
    # Uneven batches, as the warehouse hands them over.
    return [batch.slice(i, 3_333) for i in range(0, n, 3_333)]


@pytest.mark.parametrize("transport", ["composite", "bulk"])
def test_ten_thousand_upserts_under_faults_land_exactly_once(tmp_path, transport):
    # The brief's mix (5% locks, 2% 503s, sessions expiring) plus 1% dropped connections.
    # The session lives 0.5 s instead of 10 s, and each call takes 150 ms, so that a
    # run of a few seconds outlives several tokens.
    faults = "lock=0.05,unavailable=0.02,drop=0.01,session_ttl=0.5"
    with start_emulator(tmp_path, "--faults", faults, "--seed", "1", "--latency-ms", "150") as em:
        client = fast_client(em)
        outcomes: list[RecordOutcome] = []
        request = SendRequest(
            object="Account", operation="upsert", external_id="External_Id__c", transport=transport
        )
        report = client.send(request, accounts(0, N), outcomes.extend)
        # Every row reported exactly once, and the totals add up.
        counts = Counter(o.key for o in outcomes)
        assert len(counts) == N and set(counts.values()) == {1}
        assert report.sent == N == report.succeeded + report.failed + report.retryable
        assert report.failed == 0 and report.retryable == 0, [o for o in outcomes if not o.success][
            :3
        ]
        assert report.retried > 0  # the faults really happened and were retried
        assert client.session.authentications >= 2  # and sessions expired on the way
        # Every record in the emulator exactly once, with the Id the outcome reported.
        client.session.authenticate()
        http = em.session(token=client.session._token)
        stored = http.get(em.url("/__emulator/records/Account"), timeout=30).json()
        externals = Counter(r["External_Id__c"] for r in stored)
        assert len(stored) == N and set(externals.values()) == {1}
        ids = {r["External_Id__c"]: r["Id"] for r in stored}
        assert all(ids[o.key] == o.sf_id for o in outcomes)
        client.close()
