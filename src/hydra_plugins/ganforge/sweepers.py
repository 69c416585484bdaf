"""hydra-optuna-sweeper's sweeper, continuing a stored study where it stopped (ganforge.optuna_search):
`hydra.sweeper._target_` in conf/hparams_search/optuna.yaml. Hydra builds plugins only from
hydra_plugins and imports every module of it when it starts: ganforge and optuna are imported only
when a search runs."""

from __future__ import annotations

from typing import Any

from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper as PluginOptunaSweeper


class OptunaSweeper(PluginOptunaSweeper):
    def __init__(self, **params: Any) -> None:
        from ganforge.optuna_search import ContinuingOptunaSweeper

        self.sweeper = ContinuingOptunaSweeper(**params)
