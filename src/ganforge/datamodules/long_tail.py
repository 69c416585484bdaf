"""Long-tailed (class-imbalanced) training sets: a few classes plentiful, the rest rare.

`data.long_tail.ratio` is the largest class's count over the smallest's. Two profiles, as in the
long-tail literature:
- `exponential` (Cui et al. 2019, CIFAR-LT): class i keeps n_max * ratio^(-i / (K - 1)) images, so
  class 0 is the head and class K-1 the rarest;
- `step` (Buda et al. 2018): the first half of the classes keep n_max, the second half n_max / ratio.

n_max is `data.long_tail.max_per_class`, or by default the smallest class's count in the training
split, so that every class can give its share. Only the training split is cut: validation and test
sets stay as drawn (balanced), which is what balanced accuracy is measured on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ganforge.errors import GanforgeError

PROFILES = ("exponential", "step")


@dataclass(frozen=True)
class LongTail:
    ratio: float
    profile: str = "exponential"
    max_per_class: int | None = None

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> LongTail | None:
        """The `data.long_tail` settings; None when `ratio` is null (the data as drawn)."""
        settings = dict(config or {})
        if settings.get("ratio") is None:
            return None
        unknown = set(settings) - {"ratio", "profile", "max_per_class"}
        if unknown:
            raise GanforgeError(
                f"data.long_tail has no setting {', '.join(sorted(unknown))}; it takes ratio, profile and "
                "max_per_class"
            )
        tail = cls(**settings)
        if not tail.ratio >= 1:
            raise GanforgeError(
                "data.long_tail.ratio must be >= 1 (the largest class's count over the smallest's, e.g. "
                f"100), got {tail.ratio}"
            )
        if tail.profile not in PROFILES:
            raise GanforgeError(
                f"data.long_tail.profile must be one of {', '.join(PROFILES)}, got {tail.profile!r}"
            )
        if tail.max_per_class is not None and tail.max_per_class < 1:
            raise GanforgeError(
                f"data.long_tail.max_per_class must be >= 1 or null, got {tail.max_per_class}"
            )
        return tail

    def counts(self, available: list[int]) -> list[int]:
        """Images to keep per class, given how many of each class the training split has."""
        classes = len(available)
        if classes < 2:
            raise GanforgeError("data.long_tail needs a labelled data set with at least 2 classes")
        n_max = self.max_per_class or min(available)
        if self.profile == "exponential":
            counts = [int(n_max * self.ratio ** (-i / (classes - 1))) for i in range(classes)]
        else:
            head = classes - classes // 2
            counts = [n_max] * head + [int(n_max / self.ratio)] * (classes - head)
        if counts[-1] < 1:
            raise GanforgeError(
                f"data.long_tail.ratio={self.ratio:g} leaves no image of class {classes - 1} "
                f"(n_max={n_max}); lower the ratio or raise data.long_tail.max_per_class"
            )
        short = [c for c in range(classes) if counts[c] > available[c]]
        if short:
            c = short[0]
            raise GanforgeError(
                f"data.long_tail keeps {counts[c]} images of class {c}, the training split has "
                f"{available[c]}; lower data.long_tail.max_per_class"
            )
        return counts
