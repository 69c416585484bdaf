"""The entry script as a user runs it: DDP over two CPU processes, and one-line errors for mistakes."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import pytest
import torch

from ganforge.checks import check_devices
from ganforge.train import train
from tests import wandb_records
from tests.conftest import FAST, SMALL_NETWORKS, compose_train, write_shapes


@pytest.mark.slow
def test_ddp_sim_two_processes_train_and_write_one_checkpoint_each(
    tmp_path: Path, run_script, no_wandb_account
) -> None:
    args = [
        *FAST,
        *SMALL_NETWORKS["dcgan"],
        "trainer=ddp_sim",
        "trainer.accelerator=cpu",
        "logger=[csv,wandb]",
    ]
    result = run_script(args)
    assert result.returncode == 0, result.stderr[-3000:]

    runs = list((tmp_path / "logs" / "train" / "runs").iterdir())
    assert len(runs) == 1, runs  # both ranks wrote into the same run directory
    ckpts = sorted(p.name for p in (runs[0] / "checkpoints").iterdir())
    assert ckpts == ["best.ckpt", "last.ckpt"]  # one of each, not one per rank
    rows = (runs[0] / "csv" / "metrics.csv").read_text()
    assert "val/fid" in rows.splitlines()[0]  # both ranks joined the metric collectives
    ckpt = torch.load(runs[0] / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["gan_steps"] == {"g_step": 4, "d_step": 4}
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in result.stderr + result.stdout
    assert "Error" not in result.stderr, result.stderr[-3000:]  # rank 1 has no W&B run to finish
    (wandb_run,) = (runs[0] / "wandb").glob("offline-run-*/run-*.wandb")  # one run, from rank 0
    assert wandb_records.exit_code(wandb_run) == 0
    assert f"wandb sync {wandb_run.parent}" in result.stdout


@pytest.mark.slow
def test_ddp_ranks_share_one_pack_built_once(tmp_path: Path, run_script) -> None:
    from tests.test_datamodules import face, write_image

    for i in range(24):
        write_image(tmp_path / "faces" / f"{i}.png", face(i))
    args = [
        *FAST, *SMALL_NETWORKS["dcgan"], "data=image_folder", f"data.data_dir={tmp_path / 'faces'}",
        "data.image_size=16", "data.batch_size=4", "data.val_fraction=0.25",
        f"data.pack_dir={tmp_path / 'packs'}", "metrics=none", "trainer=ddp_sim", "trainer.accelerator=cpu",
        "logger=csv",
    ]  # fmt: skip
    result = run_script(args)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in output
    assert output.count("decoding processes") == 2  # train and val, each packed once for both ranks
    packs = sorted(p.name.split("-")[1] for p in (tmp_path / "packs").iterdir() if p.is_dir())
    assert packs == ["train", "val"]


BAD_INPUTS = {
    "unbuildable size": (
        ["data.image_size=48"],
        "error: dcgan cannot build 48x48 images: data.image_size must be a power of two",
    ),
    "missing checkpoint": (
        ["ckpt_path=missing/last.ckpt"],
        "error: ckpt_path=missing/last.ckpt does not exist",
    ),
    "plain ddp": (
        ["trainer.strategy=ddp", "trainer.devices=2", "trainer.accelerator=cpu"],
        "error: trainer.strategy=ddp cannot train a GAN",
    ),
    "image folder without a folder": (["data=image_folder"], "error: data.data_dir is required"),
    "mnist offline, no files": (
        ["data=mnist", "data.download=false", "paths.data_dir=nowhere"],
        "error: MNIST not found in nowhere/MNIST/raw",
    ),
    "point model on images": (["model=r1_2d"], "error: this model reads data.dim"),
    "image model on points": (["data=gaussians_grid"], "error: this model reads data.channels"),
    "negative budget": (["max_g_steps=-5"], "error: max_g_steps=-5 is not a number of generator steps"),
    "budget not a number": (["max_g_steps=abc"], "error: max_g_steps=abc is not a number of generator"),
    "negative learning rate": (
        ["model.optimizer_g.lr=-1"],
        "error: model.optimizer_g.lr=-1 must be a number",
    ),
    "misspelt key": (
        ["model.optimzer_g.lr=1"],
        "error: model.optimzer_g.lr is not a config key (a new one takes a +: +model.optimzer_g.lr=...); "
        "did you mean model.optimizer_g.lr?",
    ),
    "a path the override grammar reads as syntax": (
        ["paths.data_dir=/data/profile=step,ratio=100"],
        "error: paths.data_dir=/data/profile=step,ratio=100 does not parse (mismatched input '=' expecting "
        """<EOF>); quote the value: 'paths.data_dir="/data/profile=step,ratio=100"'""",
    ),
    "a list written wrongly": (["tags=[a,b"], "error: no viable alternative at input '[a,b'"),
    "misspelt option": (
        ["model=dcgna"],
        "error: model=dcgna is not a model config (options: cdcgan, csngan, dcgan, lsgan, mlp, mlp_2d, "
        "pacgan_2d, r1_2d, sngan, sngan_2d, wgan_gp, wgan_gp_2d); did you mean model=dcgan?",
    ),
    "misspelt option in a nested group": (
        ["model/d_augment=diffaug"],
        "error: model/d_augment=diffaug is not a model/d_augment config (options: diffaugment); did you "
        "mean model/d_augment=diffaugment?",
    ),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_user_mistakes_end_in_one_line_and_exit_1(case: str, tmp_path: Path, run_cli) -> None:
    args, message = BAD_INPUTS[case]
    result = run_cli(args)  # with the config tree printed first, as by default
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(message), result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not list((tmp_path / "logs").rglob("*.ckpt"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["trainer=gpu"], "error: trainer.accelerator=gpu but torch sees no CUDA GPU here; train on"),
        (
            ["trainer=mps"],
            "error: trainer=mps needs Apple silicon and PyTorch's MPS backend; use trainer=cpu",
        ),
    ],
)
def test_a_gpu_trainer_without_the_gpu_is_one_line(
    args: list[str], message: str, run_cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a machine without one
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    result = run_cli(args)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 1 and len(errors) == 1 and errors[0].startswith(message), result.stderr[
        -2000:
    ]


def test_several_devices_without_a_gpu_are_announced_as_cpu_processes(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger="ganforge.checks"):
        check_devices(compose_train(["trainer.devices=4"]).trainer)
        check_devices(compose_train([]).trainer)  # one device: nothing to say
    assert caplog.messages == [
        f"trainer.devices=4 without a GPU: 4 CPU processes (DDP over gloo) will share this machine's "
        f"{os.cpu_count()} cores; for one process drop trainer.devices"
    ]


def test_the_readme_image_folder_command_on_a_small_class_folder_tree(tmp_path: Path, run_cli) -> None:
    """README: `python train.py data=image_folder data.data_dir=... data.image_size=64`. On 3 classes x 20
    images the default batch (64) is more than the 57 training images: refused at once, with a size
    that fits, before the metrics classifier is trained."""
    root = write_shapes(tmp_path / "shapes", per_class=20)
    result = run_cli(["data=image_folder", f"data.data_dir={root}", "data.image_size=64"])
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 1 and errors == [
        "error: data.batch_size=64 is larger than the 57 imagefolder training images; lower it, e.g. "
        "data.batch_size=32"
    ], result.stderr[-2000:]
    assert "training the imagefolder classifier" not in result.stdout + result.stderr  # refused first


def test_a_class_folder_tree_without_a_test_split_is_measured_on_its_val_split(
    tmp_path: Path, make_cfg, caplog: pytest.LogCaptureFixture
) -> None:
    """data=image_folder holds out 5% as val and no test images by default: the metrics classifier
    (labelled folders) is measured on the val split instead of refusing the run."""
    root = write_shapes(tmp_path / "shapes", per_class=20)
    cfg = make_cfg("data=image_folder", f"data.data_dir={root}", "data.image_size=16", "data.batch_size=32")
    with caplog.at_level(logging.INFO, logger="ganforge"):
        metrics, _ = train(cfg)
    assert any(m.startswith("classifier val accuracy") for m in caplog.messages)
    assert "val/fid" in metrics


EVAL_FAST = ["metrics.num_samples=300", "metrics.num_reference=500", "metrics.classifier.epochs=2"]


@pytest.mark.slow
def test_eval_prints_and_saves_metrics_with_the_protocol(make_cfg, tmp_path: Path, run_script) -> None:
    cfg = make_cfg()
    train(cfg)
    ckpt = Path(cfg.paths.output_dir, "checkpoints", "last.ckpt")
    result = run_script([f"ckpt_path={ckpt}", *EVAL_FAST, "metrics.classifier.width=16"], script="eval.py")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Sample quality" in result.stdout and "Protocol" in result.stdout
    assert re.search(r"classes_covered\s*│\s*\d+\s*│", result.stdout)  # a count, not 1.0000
    assert f"  checkpoint: {ckpt.resolve()}\n" in result.stdout  # whole, however long

    (run,) = (tmp_path / "logs" / "eval" / "runs").iterdir()
    saved = json.loads((run / "metrics.json").read_text())
    assert {"fid", "classes_covered", "class_kl"} <= set(saved["metrics"])
    assert saved["protocol"]["generated samples"] == 300
    assert saved["protocol"]["reference samples"] == 500
    assert saved["protocol"]["reference split"] == "digits train"
    assert saved["protocol"]["feature network"] == "classifier"
    assert saved["protocol"]["resize"].startswith("none (16x16")
    assert saved["protocol"]["generator step"] == 4 and saved["protocol"]["generator"] == "trained weights"
    assert (run / "metrics.csv").read_text().startswith("fid,")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "error: ckpt_path is required"),
        (["ckpt_path=nope.ckpt"], "error: ckpt_path=nope.ckpt does not exist"),
    ],
)
def test_eval_mistakes_end_in_one_line(args: list[str], message: str, run_cli) -> None:
    result = run_cli(args, script="eval.py")
    assert result.returncode == 1 and result.stderr.strip().splitlines()[-1].startswith(message), (
        result.stderr
    )
