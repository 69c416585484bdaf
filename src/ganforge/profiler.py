"""The profiler of `debug=profiler`: Lightning's SimpleProfiler sends its table either to a file or
to the log; this one sends it to both, so a profiled run ends by showing where the time went and
keeps the table in <run>/fit-<filename>.txt to compare against later runs."""

from __future__ import annotations

import logging

from lightning.pytorch.profilers import SimpleProfiler
from lightning.pytorch.utilities import rank_zero_only

log = logging.getLogger(__name__)


class ReportingProfiler(SimpleProfiler):
    def summary(self) -> str:
        """The table Lightning writes into the file once training ends, shown on the way."""
        table = super().summary()
        if table and self.filename and rank_zero_only.rank == 0:  # without a file Lightning logs it itself
            log.info("%s", table)
        return table
