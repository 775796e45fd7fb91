"""Batches handed to the Salesforce client, kept until each of their rows has an outcome."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from sf_activation.salesforce.outcomes import Outcomes

_ROW_BITS = 32  # a key is batch number << 32 | row; batches are far smaller than 2**32 rows


@dataclass
class InFlight:
    """Batches handed to the client, kept until every row has its outcome.

    A row's key is its batch number in the high 32 bits and its row in the low ones, so
    outcomes find their rows with integer arithmetic over arrays.
    """

    batches: dict[int, pa.RecordBatch] = field(default_factory=dict)
    remaining: dict[int, int] = field(default_factory=dict)

    def add(self, number: int, batch: pa.RecordBatch) -> None:
        self.batches[number] = batch
        self.remaining[number] = batch.num_rows

    def settle(self, number: int, count: int) -> None:
        self.remaining[number] -= count
        if self.remaining[number] <= 0:
            del self.remaining[number]
            del self.batches[number]

    def keyed(self, number: int, batch: pa.RecordBatch) -> pa.Array:
        """Register `batch` and return the keys of its rows."""
        self.add(number, batch)
        return pa.array(np.arange(batch.num_rows, dtype=np.int64) + (number << _ROW_BITS))

    @staticmethod
    def locate(outcomes: Outcomes) -> tuple[np.ndarray, np.ndarray]:
        """The batch number and the row within it of each outcome."""
        return InFlight.locate_keys(outcomes.keys)

    @staticmethod
    def locate_keys(keys: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """The batch number and the row within it of each key."""
        array = np.asarray(keys, dtype=np.int64)
        return array >> _ROW_BITS, array & ((1 << _ROW_BITS) - 1)

    def rows(self, keys: list[int]) -> pa.Table:
        """The rows of `keys`, in key order within each batch."""
        numbers, rows = self.locate_keys(keys)
        parts = [
            pa.Table.from_batches([batch.take(pa.array(rows[mine]))])
            for _, batch, mine in self.by_batch(numbers)
        ]
        return pa.concat_tables(parts) if len(parts) > 1 else parts[0]

    def by_batch(self, numbers: np.ndarray) -> Iterator[tuple[int, pa.RecordBatch, np.ndarray]]:
        """(batch number, batch, mask of the outcomes that are its rows) for each batch
        that `numbers` (from `locate`) touch."""
        for number in np.unique(numbers).tolist():
            yield number, self.batches[number], numbers == number
