"""generate.py's exports: what is written, that it reads back, determinism, and refusing to overwrite."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.datasets import ImageFolder

from ganforge.checkpoint import load_checkpoint, load_model
from ganforge.datamodules.base import to_uint8
from ganforge.datamodules.image_folder import ImageFolderDataModule
from ganforge.errors import GanforgeError
from ganforge.generate import export_checkpoint
from ganforge.sampling import NoiseSampler
from ganforge.synthetic_dataset import MANIFEST, SCORES_FILE, class_counts, file_sha256, load
from tests.conftest import trained

SETTINGS = {"num_samples": 25, "counts": None, "seed": 0, "format": "png", "batch_size": 7}


@pytest.fixture(scope="module")
def conditional_ckpt(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    return trained(tmp_path_factory.mktemp("cdcgan"), cache_dir, "model=cdcgan")


@pytest.fixture(scope="module")
def unconditional_ckpt(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    return trained(tmp_path_factory.mktemp("dcgan"), cache_dir, "model=dcgan")


def export(ckpt: Path, out: Path, overwrite: bool = False, **settings) -> dict:
    return export_checkpoint(ckpt, out, SETTINGS | settings, overwrite, "cpu")


def expected_images(ckpt: Path, counts: list[int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """What the model generates for the sampler's noise and the export's labels, in [-1, 1]."""
    model = load_model(load_checkpoint(ckpt), torch.device("cpu"))
    labels = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    z = NoiseSampler(model.latent_dim, seed).noise(range(len(labels)))
    return model.generate(z, labels if model.conditional else None), labels


@pytest.mark.parametrize(
    ("num_samples", "num_classes", "counts", "expected"),
    [
        (25, 10, None, [3] * 5 + [2] * 5),
        (7, None, None, [7]),
        (None, 3, [0, 5, 1], [0, 5, 1]),
        (None, 4, {2: 9}, [0, 0, 9, 0]),
        (9, 4, {2: 9}, [0, 0, 9, 0]),
    ],
)
def test_class_counts(num_samples, num_classes, counts, expected) -> None:
    assert class_counts(num_samples, num_classes, counts) == expected


@pytest.mark.parametrize(
    ("num_samples", "num_classes", "counts", "message"),
    [
        (0, 10, None, "num_samples must be a positive"),
        (10, None, [5, 5], "counts= asks for classes, but this model is unconditional"),
        (None, 3, [1, 2], "counts has 2 entries but the model has 3 classes"),
        (None, 3, {5: 1}, "counts keys must be class indices in [0, 3)"),
        (None, 3, [1, -1, 2], "counts must be non-negative"),
        (None, 3, [0, 0, 0], "counts must be non-negative whole numbers, not all zero"),
        (10, 3, [1, 2, 3], "num_samples=10 but counts add up to 6"),
    ],
)
def test_class_counts_refuses_what_cannot_be_exported(num_samples, num_classes, counts, message) -> None:
    with pytest.raises(GanforgeError, match=re.escape(message)):
        class_counts(num_samples, num_classes, counts)


def test_png_export_reads_back_exactly_through_imagefolder_and_data_image_folder(
    conditional_ckpt: Path, tmp_path: Path
) -> None:
    out = tmp_path / "synthetic"
    manifest = export(conditional_ckpt, out)
    counts = [3] * 5 + [2] * 5
    assert sorted(p.name for p in out.iterdir()) == [*map(str, range(10)), SCORES_FILE, MANIFEST]
    assert [len(list((out / str(c)).glob("*.png"))) for c in range(10)] == counts

    images, labels, names = load(out)
    generated, expected_labels = expected_images(conditional_ckpt, counts, seed=0)
    assert torch.equal(labels, expected_labels) and names == [str(c) for c in range(10)]
    assert images.dtype == torch.uint8 and images.shape == (25, 1, 16, 16)
    assert torch.equal(images, to_uint8(generated))  # PNG is lossless: only the uint8 rounding
    assert (images.float() / 127.5 - 1 - generated).abs().max() <= 1 / 255 + 1e-6

    tree = ImageFolder(str(out))  # torchvision reads it: labels are the class indices
    assert len(tree) == 25 and tree.class_to_idx == {str(c): c for c in range(10)}
    data = ImageFolderDataModule(
        str(out), image_size=16, channels=1, val_fraction=0.0, num_workers=0, batch_size=5
    )
    data.setup("fit")
    assert data.num_classes == 10 and len(data.data_train) == 25

    saved = json.loads((out / MANIFEST).read_text())
    assert saved == json.loads(json.dumps(manifest))
    assert saved["checkpoint"]["sha256"] == file_sha256(conditional_ckpt)
    assert saved["checkpoint"]["generator"] == "trained weights" and saved["seed"] == 0
    assert saved["counts"] == {str(c): n for c, n in enumerate(counts)} and saved["num_samples"] == 25
    assert saved["training_config"]["model"]["num_classes"] == 10
    assert saved["image"] == {"channels": 1, "height": 16, "width": 16}


def test_npz_export_holds_the_same_samples_as_png(conditional_ckpt: Path, tmp_path: Path) -> None:
    export(conditional_ckpt, tmp_path / "png")
    export(conditional_ckpt, tmp_path / "npz", format="npz")
    assert sorted(p.name for p in (tmp_path / "npz").iterdir()) == [SCORES_FILE, MANIFEST, "samples.npz"]
    with np.load(tmp_path / "npz" / "samples.npz") as data:
        assert data["images"].dtype == np.uint8 and data["images"].shape == (25, 1, 16, 16)
    png, npz = load(tmp_path / "png"), load(tmp_path / "npz")
    assert torch.equal(png[0], npz[0]) and torch.equal(png[1], npz[1])


def test_same_seed_same_images_whatever_the_batch_size(conditional_ckpt: Path, tmp_path: Path) -> None:
    a = load(export(conditional_ckpt, tmp_path / "a", batch_size=7) and tmp_path / "a")
    b = load(export(conditional_ckpt, tmp_path / "b", batch_size=25) and tmp_path / "b")
    c = load(export(conditional_ckpt, tmp_path / "c", seed=1) and tmp_path / "c")
    assert torch.equal(a[0], b[0])
    assert not torch.equal(a[0], c[0]) and torch.equal(a[1], c[1])


def test_requested_counts_per_class(conditional_ckpt: Path, tmp_path: Path) -> None:
    export(conditional_ckpt, tmp_path / "out", num_samples=None, counts={3: 4, 7: 2})
    _, labels, _ = load(tmp_path / "out")
    assert labels.tolist() == [3, 3, 3, 3, 7, 7]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["3", "7", SCORES_FILE, MANIFEST]


def test_unconditional_export_is_one_unlabelled_folder(unconditional_ckpt: Path, tmp_path: Path) -> None:
    export(unconditional_ckpt, tmp_path / "out", num_samples=6)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [SCORES_FILE, MANIFEST, "unlabelled"]
    images, _, _ = load(tmp_path / "out")
    assert torch.equal(images, to_uint8(expected_images(unconditional_ckpt, [6], seed=0)[0]))
    with pytest.raises(GanforgeError, match="unconditional"):
        export(unconditional_ckpt, tmp_path / "counts", num_samples=None, counts=[6])


def test_refuses_to_overwrite_anything_but_a_previous_export_when_asked(
    conditional_ckpt: Path, tmp_path: Path
) -> None:
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep me")
    for overwrite, message in (
        (False, "is not empty; choose a new folder"),
        (True, "is not a ganforge export"),
    ):
        with pytest.raises(GanforgeError, match=message):
            export(conditional_ckpt, user, overwrite=overwrite)
    assert [p.name for p in user.iterdir()] == ["notes.txt"] and (user / "notes.txt").read_text() == "keep me"

    out = tmp_path / "synthetic"
    export(conditional_ckpt, out)
    first = load(out)[0]
    with pytest.raises(GanforgeError, match="overwrite=true"):
        export(conditional_ckpt, out, seed=1)
    assert torch.equal(load(out)[0], first)  # untouched
    export(conditional_ckpt, out, overwrite=True, seed=1, num_samples=10)
    assert json.loads((out / MANIFEST).read_text())["seed"] == 1 and len(load(out)[1]) == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "synthetic"]  # no partial folders left


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["out_dir=x"], "error: ckpt_path is required"),
        (["ckpt_path=nope.ckpt", "out_dir=x"], "error: ckpt_path=nope.ckpt does not exist"),
        (["ckpt_path=notes.txt", "out_dir=x"], "error: ckpt_path=notes.txt is not a readable checkpoint"),
        (["ckpt_path=other.ckpt", "out_dir=x"], "error: ckpt_path=other.ckpt was not written by ganforge"),
        (["ckpt_path=points.ckpt", "out_dir=x"], "error: this checkpoint generates points, not images"),
        (["ckpt_path=model.ckpt", "out_dir=x", "format=jpg"], "error: format=jpg is not supported"),
        (["ckpt_path=model.ckpt", "out_dir=full"], "error: out_dir=full is not empty"),
    ],
)
def test_generate_mistakes_end_in_one_line(
    args: list[str], message: str, run_cli, tmp_path: Path, conditional_ckpt: Path, cache_dir: Path
) -> None:
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    (tmp_path / "model.ckpt").symlink_to(conditional_ckpt)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    if "ckpt_path=points.ckpt" in args:
        points = ["max_g_steps=2", "logger=csv", "trainer.accelerator=cpu", "extras.print_config=false"]
        trained(tmp_path / "points", cache_dir, "model=mlp_2d", "data=gaussians_grid", fast=points)
        (tmp_path / "points.ckpt").symlink_to(tmp_path / "points" / "run" / "checkpoints" / "last.ckpt")
    result = run_cli(args, script="generate.py")
    assert result.returncode == 1, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith(message), result.stderr[-2000:]
    assert not (tmp_path / "x").exists() and (tmp_path / "full" / "keep.txt").read_text() == "mine"


@pytest.mark.slow
def test_generate_cli_writes_the_tree_and_says_where(
    run_script, tmp_path: Path, conditional_ckpt: Path
) -> None:
    result = run_script(
        [f"ckpt_path={conditional_ckpt}", "num_samples=20", "out_dir=out"], script="generate.py"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Exported 20 samples" in result.stdout
    images, labels, _ = load(tmp_path / "out")
    assert labels.bincount().tolist() == [2] * 10 and images.shape == (20, 1, 16, 16)


def test_exports_come_from_the_ema_generator_when_there_is_one(tmp_path: Path, cache_dir: Path) -> None:
    ckpt = trained(tmp_path, cache_dir, "model=cdcgan", "model.ema_decay=0.5")
    manifest = export(ckpt, tmp_path / "out", num_samples=10)
    assert manifest["checkpoint"]["generator"] == "EMA weights"
    model = load_model(load_checkpoint(ckpt), torch.device("cpu"))
    z = NoiseSampler(model.latent_dim, 0).noise(range(10))
    labels = torch.arange(10)
    ema = to_uint8(model.generator_ema.module.eval()(z, labels))
    trained_weights = to_uint8(model.generator.eval()(z, labels))
    images = load(tmp_path / "out")[0]
    assert torch.equal(images, ema) and not torch.equal(images, trained_weights)
