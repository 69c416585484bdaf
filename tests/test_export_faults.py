"""Exports and the tools around them under faults: a folder that only looks like an export, a checkpoint
whose config asks for more than its weights, SIGTERM and Ctrl-C mid-export, a full or read-only disk, and
an export larger than memory."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from ganforge.augment import save
from ganforge.checkpoint_layout import CONFIG
from ganforge.config import instantiate
from ganforge.datamodules.base import to_uint8
from ganforge.errors import GanforgeError
from ganforge.gan_module import GANLitModule
from ganforge.generate import export_checkpoint
from ganforge.losses import NonSaturatingLoss
from ganforge.networks.mlp import MLPDiscriminator, MLPGenerator
from ganforge.sampling import NoiseSampler
from ganforge.synthesize import check_synthesize
from ganforge.synthetic_dataset import MANIFEST, SCORES_FILE, export
from tests.conftest import ROOT, trained

SETTINGS = {"num_samples": 20, "counts": None, "seed": 0, "format": "png", "batch_size": 8}
LOADS = {"map_location": "cpu", "weights_only": True}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """A tiny unconditional MLP GAN (16x16 digits), trained once for the module."""
    return trained(tmp_path_factory.mktemp("mlp"), cache_dir, "model=mlp")


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (hidden ones too) and its contents."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def peak_rss_growth(run: Callable[[], object]) -> int:
    """Bytes by which the process's resident memory peaked above its level before `run` (Linux resets
    the high-water mark VmHWM on `5` to /proc/self/clear_refs). Torch's allocations count, unlike in
    tracemalloc."""

    def status(key: str) -> int:
        line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(key))
        return int(line.split()[1]) * 1024

    Path("/proc/self/clear_refs").write_text("5")
    before = status("VmRSS:")
    run()
    return status("VmHWM:") - before


needs_proc = pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc")


# 1. overwrite=true replaces only a folder that is provably an untouched export ------------------------


def test_overwrite_replaces_only_an_untouched_export(ckpt: Path, tmp_path: Path, run_cli, make_cfg) -> None:
    project = tmp_path / "proj"  # the finding: a project folder that happens to hold a manifest.json
    (project / "src").mkdir(parents=True)
    (project / MANIFEST).write_text('{"name": "app"}')
    (project / "src" / "thesis.tex").write_text("work")
    added = tmp_path / "added"  # a real export, with a file of the user's put in
    export_checkpoint(ckpt, added, SETTINGS, False, "cpu")
    (added / "unlabelled" / "notes.txt").write_text("mine")
    taken = tmp_path / "taken"  # a real export with an image taken out
    export_checkpoint(ckpt, taken, SETTINGS, False, "cpu")
    (taken / "unlabelled" / "07.png").unlink()
    reasons = {
        project: "its manifest.json is not one generate.py writes",
        added: "it holds unlabelled/notes.txt, which is no part of an export",
        taken: "its unlabelled/07.png is missing",
    }
    for folder, reason in reasons.items():
        before = tree(folder)
        args = [f"ckpt_path={ckpt}", f"out_dir={folder}", "num_samples=10", "overwrite=true"]
        result = run_cli(args, script="generate.py")
        assert result.returncode == 1, result.stderr[-2000:]
        assert error_lines(result.stderr) == [
            f"error: out_dir={folder} is not empty and is not a ganforge export ({reason}); overwrite=true "
            "only replaces an untouched previous export, so choose another folder"
        ]
        assert tree(folder) == before

    cfg = make_cfg("synthesize=default", "model=cdcgan", f"synthesize.out_dir={project}")
    with pytest.raises(GanforgeError, match=r"is not a ganforge export \(its manifest.json is not one"):
        check_synthesize(cfg, None)  # refused before training, before the data is read

    untouched = tmp_path / "untouched"
    export_checkpoint(ckpt, untouched, SETTINGS, False, "cpu")
    args = [f"ckpt_path={ckpt}", f"out_dir={untouched}", "num_samples=10", "overwrite=true"]
    assert run_cli(args, script="generate.py").returncode == 0
    assert json.loads((untouched / MANIFEST).read_text())["num_samples"] == 10
    assert sorted(p.name for p in untouched.iterdir()) == [SCORES_FILE, MANIFEST, "unlabelled"]
    assert len(list((untouched / "unlabelled").iterdir())) == 10
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


# 2. A stored config that asks for more than the stored weights is refused before anything is built ----


def inflated(ckpt: Path, out: Path, views: bool) -> Path:
    """`ckpt` with its stored generator widened to hidden_dims=[10000, 10000] (400 MB of weights) and,
    with `views`, its weights replaced by stride-0 views of that shape (next to no data in the file)."""
    checkpoint = torch.load(ckpt, **LOADS)
    generator = checkpoint[CONFIG]["config"]["model"]["generator"]
    generator["hidden_dims"] = [10000, 10000]
    if views:
        with torch.device("meta"):
            shapes = instantiate(OmegaConf.create(generator)).state_dict()
        state = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("generator.")}
        state |= {f"generator.{k}": torch.zeros(1).expand(v.shape) for k, v in shapes.items()}
        checkpoint["state_dict"] = state
    torch.save(checkpoint, out)
    return out


@needs_proc
@pytest.mark.parametrize("views", [False, True], ids=["wider-config", "stride-0-weights"])
def test_a_config_bigger_than_its_weights_is_refused_before_building(
    ckpt: Path, tmp_path: Path, run_cli, views: bool
) -> None:
    hostile = inflated(ckpt, tmp_path / "hostile.ckpt", views)
    args = [f"ckpt_path={hostile}", f"out_dir={tmp_path / 'out'}", "num_samples=10"]
    results = []
    growth = peak_rss_growth(lambda: results.append(run_cli(args, script="generate.py")))
    (result,) = results
    assert result.returncode == 1, result.stderr[-2000:]
    (line,) = error_lines(result.stderr)
    assert line.startswith(f"error: refusing {hostile}: its stored model config builds 103,")  # million
    assert line.endswith("so nothing was built: use a checkpoint as train.py wrote it")
    assert growth < 100e6, f"{growth / 1e6:.0f} MB: the 400 MB model was built"
    assert not (tmp_path / "out").exists()


# 3. SIGTERM and Ctrl-C stop an export cleanly; later exports clear what killed ones left --------------


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "Ctrl-C"]
)
def test_a_signal_stops_an_export_cleanly_and_stale_leftovers_are_cleared(
    ckpt: Path, tmp_path: Path, signum: int, code: int
) -> None:
    out = tmp_path / "out"
    export_checkpoint(ckpt, out, SETTINGS, False, "cpu")
    previous = tree(out)
    dead, alive = dead_pid(), os.getpid()
    for name in [f".out.partial-{dead}", f".out.replaced-{dead}", f".out.partial-{alive}", ".out.partial-x"]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "0.png").write_bytes(b"png")
    args = [f"ckpt_path={ckpt}", f"out_dir={out}", "num_samples=1000000", "overwrite=true", "device=cpu"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "generate.py"), f"paths.log_dir={tmp_path / 'logs'}", *args],
        cwd=tmp_path, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    partial = tmp_path / f".out.partial-{proc.pid}" / "unlabelled"
    deadline = time.monotonic() + 120
    while not (partial.is_dir() and len(os.listdir(partial)) >= 50):  # it is writing images
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.1)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)

    assert proc.returncode == code, stderr[-3000:]
    name = signal.Signals(signum).name
    assert error_lines(stderr) == [
        f"error: {name}: stopped writing {out}, which is as it was; nothing half-written is left"
    ]
    assert tree(out) == previous  # the previous export, untouched
    left = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".out."))
    assert left == [f".out.partial-{alive}", ".out.partial-x"]  # the dead writers' folders are gone


# 4. A full or read-only disk ends in one line and leaves the previous files whole ---------------------


def mount_tmpfs(where: Path, options: str) -> None:
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], check=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB filesystem of our own (needs root and mount, as in CI)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root and `mount -t tmpfs` (CI runs as root)")
    mount_tmpfs(tmp_path / "disk", "size=1m")
    yield tmp_path / "disk"
    subprocess.run(["umount", str(tmp_path / "disk")], check=True)


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_a_full_or_read_only_disk_is_one_line_and_overwrites_nothing(
    ckpt: Path, small_disk: Path, run_cli, fault: str
) -> None:
    out, results = small_disk / "out", small_disk / "augment"
    export_checkpoint(ckpt, out, SETTINGS, False, "cpu")
    save([{"setting": "real", "mean": 0.5}], [{"setting": "real", "mean": 0.5}], results)
    if fault == "full":
        with pytest.raises(OSError), (small_disk / "filler").open("wb") as f:
            for _ in range(1024):
                f.write(b"\0" * 4096)
                f.flush()
    else:
        subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    before = tree(small_disk)

    # read-only: an export that fits in the free space, so that writing it is what fails
    samples = 5000 if fault == "full" else 1000
    args = [f"ckpt_path={ckpt}", f"out_dir={out}", f"num_samples={samples}", "format=npz", "overwrite=true"]
    result = run_cli(args, script="generate.py")
    rows = [{"setting": f"mixed {i}", "mean": 0.5} for i in range(5000)]
    with pytest.raises(GanforgeError) as refused:
        save(rows, rows, results)

    assert result.returncode == 1, result.stderr[-2000:]
    if fault == "full":  # refused before writing: it cannot fit (synthetic_dataset.check_space)
        expected = (
            f"error: out_dir={out}: 5,000 images of 1x16x16 in one samples.npz need about 1.3 MB on disk and "
            f"{small_disk} has 0 bytes free; free space, choose an out_dir on a larger disk, export fewer "
            "samples"
        )
        assert str(refused.value).startswith(f"no space left to write results.csv in {results} (No space")
    else:
        expected = (
            f"error: cannot write {out} (Read-only file system); make {small_disk} writable or point out_dir "
            "elsewhere"
        )
        assert str(refused.value).startswith(f"cannot write {results}/results.csv (Read-only file system)")
    assert error_lines(result.stderr) == [expected]
    assert tree(small_disk) == before  # the previous export and tables whole, no partial files


# 5. An .npz export streams to disk: memory holds a batch, not the data set ----------------------------


@needs_proc
def test_an_npz_export_streams_to_disk_in_bounded_memory(tmp_path: Path) -> None:
    generator = MLPGenerator(image_size=64, channels=3, latent_dim=8, hidden_dims=(8,))
    model = GANLitModule(
        generator, MLPDiscriminator(image_size=64, channels=3, hidden_dims=(8,)), NonSaturatingLoss(),
        torch.optim.Adam, torch.optim.Adam,
    ).eval()  # fmt: skip
    n = 16000  # 16000 x 3 x 64 x 64 bytes: 197 MB
    growth = peak_rss_growth(lambda: export(model, tmp_path / "out", [n], 0, 64, "npz", False, {}))
    assert growth < 50e6, f"{growth / 1e6:.0f} MB for a 197 MB export: it was held in memory"

    with np.load(tmp_path / "out" / "samples.npz") as data:  # what np.savez writes, as before
        images, labels = data["images"], data["labels"]
    assert images.shape == (n, 3, 64, 64) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and (labels == -1).all() and len(labels) == n
    z = NoiseSampler(8, 0).noise(range(n - 3, n))
    with torch.no_grad():
        assert np.array_equal(images[-3:], to_uint8(model.generate(z, None)).numpy())
