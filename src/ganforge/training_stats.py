"""Training statistics kept on the device and read back once per interval (as StyleGAN's
`training_stats` does).

Each update stacks its scalars (loss, D's scores, penalties) into one small device tensor, with one
kernel and no host wait. `read` copies everything written since the last read to the host
in one transfer, every logging interval and before every checkpoint; on a GPU that is the only
point where the host waits for the steps queued before it. So the logged values are the interval's
means rather than one step's, and a NaN or inf at any update is still found exactly, with the
generator step it happened at.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass(frozen=True)
class NonFinite:
    """The first statistic that was NaN or inf: at which generator step, and its value."""

    g_step: int
    name: str
    value: float


class TrainingStats:
    def __init__(self) -> None:
        self._pending: list[tuple[int, tuple[str, ...], Tensor]] = []  # (g_step, names, values), in order
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}
        self._peaks: dict[str, float] = {}  # the largest |value| per name since `take_peaks`
        self.first_non_finite: NonFinite | None = None

    @torch.no_grad()
    def record(self, g_step: int, values: dict[str, Tensor]) -> None:
        """Note one update's scalars (0-d tensors on one device), without reading them: one kernel."""
        self._pending.append((g_step, tuple(values), torch.stack([v.float() for v in values.values()])))

    def read(self) -> NonFinite | None:
        """Move what the device holds to the host (one read-back); the first non-finite value so far."""
        if not self._pending:
            return self.first_non_finite
        values = iter(torch.cat([v for _, _, v in self._pending]).tolist())
        for g_step, names, _ in self._pending:
            for name in names:
                value = next(values)
                if not math.isfinite(value):
                    self.first_non_finite = self.first_non_finite or NonFinite(g_step, name, value)
                    continue
                self._sums[name] = self._sums.get(name, 0.0) + value
                self._counts[name] = self._counts.get(name, 0) + 1
                self._peaks[name] = max(self._peaks.get(name, 0.0), abs(value))
        self._pending = []
        return self.first_non_finite

    def means(self) -> dict[str, float]:
        """Each statistic's mean over its finite values since the last call, which starts a new interval."""
        self.read()
        means = {name: total / self._counts[name] for name, total in self._sums.items()}
        self._sums, self._counts = {}, {}
        return means

    def take_peaks(self) -> dict[str, float]:
        """The largest |value| of each statistic since the last call."""
        self.read()
        peaks, self._peaks = self._peaks, {}
        return peaks

    def state_dict(self) -> dict[str, Any]:
        """The interval in progress, read back (a checkpoint's copy: resuming continues it)."""
        self.read()
        return {"sums": dict(self._sums), "counts": dict(self._counts), "peaks": dict(self._peaks)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._sums, self._counts, self._peaks = (
            dict(state["sums"]),
            dict(state["counts"]),
            dict(state["peaks"]),
        )
