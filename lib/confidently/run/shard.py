"""``--shard i/N``: this process takes every N-th unit starting at i (0-based, like Slurm arrays)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from confidently.errors import UsageError

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str | None) -> Shard:
        if not text:
            return cls()
        try:
            index, count = (int(part) for part in text.split("/"))
        except ValueError:
            raise UsageError(f"--shard {text!r}: expected i/N, e.g. 0/4 (i counts from 0)") from None
        if count < 1 or not 0 <= index < count:
            raise UsageError(f"--shard {text!r}: need N >= 1 and 0 <= i < N")
        return cls(index, count)

    def owns(self, position: int) -> bool:
        return position % self.count == self.index

    def positions(self, total: int) -> list[int]:
        """The positions among ``total`` units that this shard owns, in order."""
        return list(range(self.index, total, self.count))

    def select(self, items: Iterable[T]) -> Iterator[T]:
        """The items at positions this shard owns; order is kept."""
        return (item for position, item in enumerate(items) if self.owns(position))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"
