"""Progress of long steps that run before or outside training (the metrics classifier's first training,
an export): rich's bar on a terminal; anywhere else (a log file, a pipe, a batch job's output) a log
line every LOG_EVERY_S seconds with the time left, so that `train.log` and a redirected run show life.
"""

from __future__ import annotations

import datetime
import logging
import time

import rich
import rich.progress

log = logging.getLogger(__name__)

LOG_EVERY_S = 30.0


def duration(seconds: float) -> str:
    return str(datetime.timedelta(seconds=round(seconds)))


class Progress:
    """`with Progress("exporting", total, "images") as bar: ... bar.advance(n, status)`. Not `enabled`:
    counts, shows and logs nothing."""

    def __init__(self, description: str, total: int, unit: str, enabled: bool = True) -> None:
        self.description, self.unit = description, unit
        self.log_lines = enabled and not rich.get_console().is_terminal
        self.bar = rich.progress.Progress(
            *rich.progress.Progress.get_default_columns(),
            rich.progress.TextColumn("{task.fields[status]}"),
            transient=True,
            disable=not enabled or self.log_lines,
        )
        self.task = self.bar.add_task(description, total=total, status="")
        self.logged_at = time.monotonic()

    def __enter__(self) -> Progress:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def advance(self, n: int = 1, status: str = "") -> None:
        """`n` more done; `status` (e.g. the accuracy so far) is shown beside the count."""
        self.bar.advance(self.task, n)
        if status:
            self.bar.update(self.task, status=status)
        if self.log_lines and time.monotonic() - self.logged_at >= LOG_EVERY_S:
            self.logged_at = time.monotonic()
            self.report(status)

    def report(self, status: str) -> None:
        """One log line: done so far, `status`, time elapsed and left."""
        task = self.bar.tasks[self.task]
        parts = [f"{int(task.completed):,}/{int(task.total or 0):,} {self.unit} ({task.percentage:.0f}%)"]
        parts += [status] if status else []
        parts.append(f"{duration(task.elapsed or 0)} elapsed")
        if task.time_remaining is not None:
            parts.append(f"about {duration(task.time_remaining)} left")
        log.info("%s: %s", self.description, ", ".join(parts))
