"""Values of the wrong type or range, a config file that is not YAML, W&B online without a key: each is
one `error:` line naming the key and a value that works, before anything is built; a single word where
a list belongs is that one-element list."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from pydantic import TypeAdapter

from ganforge.checks import PYDANTIC, RULES, TRAIN_SETTINGS, check_train_config, check_values, valid
from tests.conftest import CONF, ROOT, compose_train

QUICK = ["metrics=none", "logger=csv", "max_g_steps=2"]

MISTAKES = {
    "betas not numbers": (
        ["model.optimizer_g.betas=[0.5,abc]"],
        "model.optimizer_g.betas=[0.5,abc] must be a list of 2 numbers >= 0 and < 1 "
        "(e.g. model.optimizer_g.betas=[0.5,0.999])",
    ),
    "beta of 1 or more": (
        ["model.optimizer_d.betas=[0.5,1.5]"],
        "model.optimizer_d.betas=[0.5,1.5] must be a list of 2 numbers >= 0 and < 1 "
        "(e.g. model.optimizer_d.betas=[0.5,0.999])",
    ),
    "hidden layer sizes not numbers": (
        ["model=mlp", "model.generator.hidden_dims=[256,big]"],
        "model.generator.hidden_dims=[256,big] must be a list of whole numbers >= 1 "
        "(e.g. model.generator.hidden_dims=[256,512])",
    ),
    "image size with a unit": (
        ["data.image_size=32px"],
        "data.image_size=32px must be a whole number >= 1 (e.g. data.image_size=32)",
    ),
    "seed not a number": (["seed=abc"], "seed=abc must be a whole number or null (e.g. seed=12345)"),
    "no latent dimensions": (
        ["model.generator.latent_dim=0"],
        "model.generator.latent_dim=0 must be a whole number >= 1 (e.g. model.generator.latent_dim=100)",
    ),
    "no devices": (
        ["trainer.devices=0"],
        "trainer.devices=0 must be a number of devices >= 1, -1 (all of them), auto, or the devices' "
        "indices ([0,1]) (e.g. trainer.devices=1)",
    ),
    "sample grid every 0 steps": (
        ["callbacks.sample_grid.every_n_g_steps=0"],
        "callbacks.sample_grid.every_n_g_steps=0 must be a whole number >= 1 or null "
        "(e.g. callbacks.sample_grid.every_n_g_steps=250)",
    ),
    "checkpoint every 0 steps": (
        ["callbacks.model_checkpoint.last_every_n_g_steps=0"],
        "callbacks.model_checkpoint.last_every_n_g_steps=0 must be a whole number >= 1 or null "
        "(e.g. callbacks.model_checkpoint.last_every_n_g_steps=50)",
    ),
    "negative learning rate": (
        ["model.optimizer_d.lr=-1"],
        "model.optimizer_d.lr=-1 must be a number > 0 (e.g. model.optimizer_d.lr=0.0002)",
    ),
    "learning rate not a number": (
        ["model.optimizer_g.lr=fast"],
        "model.optimizer_g.lr=fast must be a number > 0 (e.g. model.optimizer_g.lr=0.0002)",
    ),
    "empty batches": (
        ["data.batch_size=0"],
        "data.batch_size=0 must be a whole number >= 1 (e.g. data.batch_size=64)",
    ),
    "fractional D steps": (
        ["model.d_steps_per_g=1.5"],
        "model.d_steps_per_g=1.5 must be a whole number >= 1 (e.g. model.d_steps_per_g=1)",
    ),
    "unknown precision": (
        ["trainer.precision=fp8"],
        "trainer.precision=fp8 must be null or one of 64, 32, 16, transformer-engine, "
        "transformer-engine-float16, 16-true, 16-mixed, bf16-true, bf16-mixed, 32-true, 64-true, bf16",
    ),
    "logging every 0 steps": (
        ["trainer.log_every_n_steps=0"],
        "trainer.log_every_n_steps=0 must be a whole number >= 1 or null (e.g. trainer.log_every_n_steps=50)",
    ),
    "epochs not whole": (["trainer.max_epochs=2.5"], "trainer.max_epochs=2.5 must be a whole number or null"),
    "channels as a word": (
        ["model.discriminator.base_channels=wide"],
        "model.discriminator.base_channels=wide must be a whole number >= 1 "
        "(e.g. model.discriminator.base_channels=64)",
    ),
    "a fraction as a word": (
        ["data.val_fraction=some"],
        "data.val_fraction=some must be a number (e.g. data.val_fraction=0.1)",
    ),
    "negative penalty": (
        ["model.r1_gamma=-10"],
        "model.r1_gamma=-10 must be a number >= 0 (e.g. model.r1_gamma=10)",
    ),
    "EMA decay of 1": (
        ["model.ema_decay=1"],
        "model.ema_decay=1 must be a number > 0 and < 1 or null (e.g. model.ema_decay=0.999)",
    ),
    "a switch as a word": (
        ["model.compile=yes"],
        "model.compile=yes must be true or false (e.g. model.compile=false)",
    ),
    "negative loader processes": (
        ["data.num_workers=-1"],
        "data.num_workers=-1 must be a whole number >= 0 (e.g. data.num_workers=2)",
    ),
    "metrics' sample count as a word": (
        ["metrics.num_samples=many"],
        "metrics.num_samples=many must be a whole number >= 1 (e.g. metrics.num_samples=2000)",
    ),
    "a key the model does not have": (
        ["model.generator.hidden_dims=[256,512]"],
        "model.generator.hidden_dims is not a config key (a new one takes a +: "
        "+model.generator.hidden_dims=...); did you mean model.generator.latent_dim?",
    ),
}


def one_error_line(result) -> str:
    """The run's only `error:` line, after checking it failed as a user mistake must."""
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 1 and len(errors) == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    return errors[0]


@pytest.mark.parametrize("case", MISTAKES)
def test_a_value_of_the_wrong_type_or_range_is_one_line_before_anything_is_built(
    case: str, tmp_path: Path, run_cli
) -> None:
    args, message = MISTAKES[case]
    result = run_cli([*QUICK, *args])
    assert one_error_line(result) == f"error: {message}"
    assert not list((tmp_path / "logs").rglob("*.ckpt"))
    assert not list((tmp_path / "logs").rglob("metrics.csv"))  # refused before training started


@pytest.mark.parametrize("name", RULES)
def test_the_example_in_every_rule_is_a_value_that_works(name: str) -> None:
    rule = RULES[name]
    assert valid(TypeAdapter(rule.type, config=PYDANTIC), rule.example)


@pytest.mark.parametrize(
    "overrides",
    [
        *([f"model={m}"] for m in ("cdcgan", "csngan", "dcgan", "lsgan", "mlp", "sngan", "wgan_gp")),
        *([f"model={m}", "data=gaussians_grid"] for m in ("mlp_2d", "pacgan_2d", "r1_2d", "sngan_2d")),
        *([f"data={d}"] for d in ("celeba", "cifar10", "fashion_mnist", "mnist")),
        ["data=image_folder", "data.data_dir=faces"],
        *([f"trainer={t}"] for t in ("ddp", "ddp_sim", "gpu", "mps")),
        ["experiment=scarce_mnist"],
        ["logger=many_loggers", "model/d_augment=diffaugment", "model.ema_decay=0.999"],
        ["trainer.devices=[0,1]", "trainer.precision=bf16-mixed", "model.generator.latent_dim=8"],
    ],
)
def test_every_shipped_config_passes_the_checks(overrides: list[str], tmp_path: Path) -> None:
    cfg = compose_train(overrides, tmp_path / "run")
    before = OmegaConf.to_container(cfg)
    check_values(cfg, TRAIN_SETTINGS)
    assert OmegaConf.to_container(cfg) == before  # nothing rewritten either


def test_a_single_word_where_a_list_belongs_is_that_list(tmp_path: Path) -> None:
    """`tags=foo` was W&B tags f, o, o; `hidden_dims=256` a TypeError deep in the network."""
    cfg = compose_train(
        ["tags=foo", "model=mlp", "model.generator.hidden_dims=256", "synthesize=default",
         "synthesize.downstream.strategies=real", "synthesize.downstream.seeds=0"],
        tmp_path / "run",
    )  # fmt: skip
    check_train_config(cfg)
    assert cfg.logger.wandb.tags == ["foo"]
    assert cfg.model.generator.hidden_dims == [256]
    assert cfg.synthesize.downstream.strategies == ["real"] and cfg.synthesize.downstream.seeds == [0]


def test_augment_takes_one_strategy_and_one_seed_as_words(run_cli, tmp_path: Path) -> None:
    """`augment.py strategies=real` ran the letters r, e, a, l as strategies; `seeds=0` was a TypeError."""
    args = ["data=digits", "strategies=real", "seeds=0", "classifier.steps=2", "wandb.enabled=false"]
    result = run_cli(args, script="augment.py")
    assert result.returncode == 0, result.stderr[-3000:]
    (summary,) = (tmp_path / "logs").rglob("summary.csv")
    rows = summary.read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith("real,real,"), rows


def test_wandb_online_without_a_key_is_one_line_before_the_run_starts(
    run_cli, tmp_path: Path, no_wandb_account, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "online")
    result = run_cli([*QUICK, "logger=wandb"])
    assert one_error_line(result) == (
        "error: WANDB_MODE=online but W&B has no API key here; log in (`wandb login` or WANDB_API_KEY=...), "
        "or unset WANDB_MODE to log offline and upload later with `wandb sync`"
    )
    assert not list((tmp_path / "logs").rglob("*.wandb"))


@pytest.mark.parametrize(
    ("text", "where", "problem"),
    [
        (
            "paths: {data_dir: /datasets\ntrainer:\n  devices: 2\n",
            "line 3, column 8",
            "expected ',' or '}', but got ':' (while parsing a flow mapping at line 2)",
        ),
        ("trainer:\n\tdevices: 2\n", "line 3, column 1", "found character '\\t' that cannot start any token"),
    ],
)
def test_a_local_config_that_is_not_yaml_is_one_line(
    text: str, where: str, problem: str, tmp_path: Path, run_cli
) -> None:
    """conf/local/default.yaml is the machine's own file, edited by hand (conf/local/README.md); here in a
    copy of conf/, so that the checkout's own conf/local stays as it is."""
    shutil.copytree(CONF, tmp_path / "app" / "conf")
    shutil.copy(ROOT / "train.py", tmp_path / "app" / "train.py")
    local = tmp_path / "app" / "conf" / "local" / "default.yaml"  # replaces the checkout's own, if any
    local.write_text("# @package _global_\n" + text)
    result = run_cli(QUICK, script=str(tmp_path / "app" / "train.py"))
    assert (
        one_error_line(result) == f"error: {local}, {where} is not valid YAML: {problem}; fix the file there"
    )
    assert not (tmp_path / "logs").exists()  # refused before Hydra made a run directory
