"""Each weight cast once per update under mixed precision, not once per use.

Lightning 2.6 runs the training step in `torch.autocast(..., cache_enabled=False)`: its fix for its
issue 20644, where a weight cast under `no_grad` (as G's are while D updates) was reused later where
gradients were due (G's own update), which then got none. Without the cache every use of a weight
casts it again: D's weights twice per D update (real and fake batches), three times with R1; each
cast is a kernel and a copy. Within one GAN update no network is used both with and without
gradients, so the cache is safe there: `casts_cached` turns it on for one update and empties it when
the update ends (Lightning's later fix, PR 21616, empties it when a `no_grad` block exits instead).

The cast's gradient then sums the uses in the low precision before it reaches the fp32 weight, as
in plain `torch.autocast`, whose cache is on by default.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def casts_cached(enabled: bool = True) -> Iterator[None]:
    """Autocast's weight-cast cache on inside the block and emptied when it ends (a no-op when not
    `enabled`: outside autocast there is nothing to cache)."""
    if not enabled:
        yield
        return
    was_enabled = torch.is_autocast_cache_enabled()
    torch.set_autocast_cache_enabled(True)
    try:
        yield
    finally:
        torch.clear_autocast_cache()
        torch.set_autocast_cache_enabled(was_enabled)
