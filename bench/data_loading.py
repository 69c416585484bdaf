"""Full-size image folders: a pack built once and memory-mapped, against JPEG decoding per item in
loader workers and against decoding into memory on every run (`data.pack=false`).

    .venv/bin/python bench/data_loading.py make --celeba ../shared/datasets/celeba --out DIR --count 20000
    .venv/bin/python bench/data_loading.py run --celeba DIR [--small ../shared/datasets/celeba]

`make` writes a CelebA-like folder of `--count` distinct JPEGs (178x218) from the real ones: each copy
shifted by a few pixels, mirrored every other round, and re-encoded. `run` prints, at 64x64: the pack
build (images/s), loader images/s from the pack, per item (2 workers) and in memory at batch 128 and
512, memory per process with two processes reading the same set (with `--small`, also for a smaller
set: a pack's memory should not grow with the set), and the time from `python train.py` to its first
step, first and second run. Temporary packs, caches and logs only; the folders are read in place.
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch
from PIL import Image
from startup import to_first_step

from ganforge.datamodules.celeba import FOLDER, CelebADataModule

SIZE = 64


def make_copy(job: tuple[Path, Path, int]) -> None:
    source, target, round_ = job
    rng = np.random.default_rng(round_ * 100_003 + int(source.stem))
    with Image.open(source) as img:
        pixels = np.asarray(img.convert("RGB"))
    dy, dx = rng.integers(-6, 7, size=2)
    pixels = np.roll(pixels, (dy, dx), axis=(0, 1))
    if round_ % 2:
        pixels = pixels[:, ::-1]
    Image.fromarray(np.ascontiguousarray(pixels)).save(target, quality=int(rng.integers(85, 96)))


def make(celeba: Path, out: Path, count: int) -> None:
    sources = sorted((celeba / FOLDER).glob("*.jpg"))
    (out / FOLDER).mkdir(parents=True, exist_ok=False)
    jobs = [
        (sources[k % len(sources)], out / FOLDER / f"{k + 1:06d}.jpg", k // len(sources))
        for k in range(count)
    ]
    start = time.perf_counter()
    with multiprocessing.Pool() as pool:
        pool.map(make_copy, jobs, chunksize=64)
    print(f"wrote {count} JPEGs from {len(sources)} in {time.perf_counter() - start:.0f} s to {out / FOLDER}")


def datamodule(
    folder: Path, packs: Path | None, batch_size: int = 128, in_memory: bool = True
) -> CelebADataModule:
    return CelebADataModule(
        str(folder), image_size=SIZE, batch_size=batch_size, num_workers=2, in_memory=in_memory,
        pack=packs is not None, pack_dir=None if packs is None else str(packs),
    )  # fmt: skip


def epoch_rate(dm: CelebADataModule) -> float:
    start, n = time.perf_counter(), 0
    for images, _ in dm.train_dataloader():
        n += images.shape[0]
    return n / (time.perf_counter() - start)


def memory_of_one_rank(folder: Path, packs: Path | None, out: Any, barrier: Any) -> None:
    dm = datamodule(folder, packs)
    dm.setup()
    epoch_rate(dm)
    barrier.wait()  # both have read everything: shared pages are counted as shared
    info = psutil.Process().memory_full_info()
    out.put((info.rss, info.uss, info.pss))
    barrier.wait()  # neither exits (unsharing its pages) before the other has measured


def memory_per_rank(folder: Path, packs: Path | None) -> tuple[float, float, float]:
    """(RSS, USS, PSS) in MiB after one epoch, the mean of two processes measured while both live."""
    ctx = multiprocessing.get_context("spawn")
    out, barrier = ctx.Queue(), ctx.Barrier(2)
    procs = [ctx.Process(target=memory_of_one_rank, args=(folder, packs, out, barrier)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [out.get(timeout=1800) for _ in procs]
    for p in procs:
        p.join()
    return tuple(float(np.mean([r[i] for r in results])) / 2**20 for i in range(3))  # type: ignore[return-value]


def run(folder: Path, small: Path | None) -> None:
    n = len(list((folder / FOLDER).glob("*.jpg")))
    print(
        f"{n} JPEGs in {folder}, {SIZE}x{SIZE}, {torch.get_num_threads()} threads, {psutil.cpu_count()} cores"
    )
    with tempfile.TemporaryDirectory() as tmp:
        packs = Path(tmp, "packs")
        start = time.perf_counter()
        dm = datamodule(folder, packs)
        dm.setup()
        build = time.perf_counter() - start
        start = time.perf_counter()
        datamodule(folder, packs).setup()
        reopen = time.perf_counter() - start
        print(f"| pack build (first run) | {build:.1f} s | {n / build:,.0f} images/s |")
        print(f"| pack open (later runs) | {reopen:.2f} s | |")
        for batch in (128, 512):
            rates = {}
            for name, packed, in_memory in (
                ("pack", True, True),
                ("per item", False, False),
                ("in memory", False, True),
            ):
                dm = datamodule(folder, packs if packed else None, batch, in_memory)
                start = time.perf_counter()
                dm.setup()
                setup = time.perf_counter() - start
                rates[name] = max(epoch_rate(dm) for _ in range(2 if name != "per item" else 1))
                print(f"| batch {batch}, {name} | setup {setup:.1f} s | {rates[name]:,.0f} images/s |")
            print(f"| batch {batch}: pack / per item | {rates['pack'] / rates['per item']:.1f}x | |")
        for label, data in (("", folder), (" (small set)", small)):
            if data is None:
                continue
            for name, pack_dir in (("pack", packs), ("in memory", None)):
                rss, uss, pss = memory_per_rank(data, pack_dir)
                print(f"| 2 processes, {name}{label} | RSS {rss:.0f} | USS {uss:.0f} | PSS {pss:.0f} MiB |")
        cache = Path(tmp, "cache")
        args = [
            "data=celeba", f"data.data_dir={folder}", "model=dcgan", f"data.image_size={SIZE}",
            "metrics=none", "logger=csv", "extras.print_config=false",
        ]  # fmt: skip
        for name, extra in (
            ("pack, first run", []),
            ("pack, second run", []),
            ("pack=false", ["data.pack=false"]),
        ):
            seconds = to_first_step([*args, *extra], Path(tmp, "logs"), cache)
            print(f"| `python train.py` to the first step, {name} | {seconds:.1f} s | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("make")
    m.add_argument("--celeba", type=Path, required=True, help="folder holding img_align_celeba/ (real JPEGs)")
    m.add_argument("--out", type=Path, required=True)
    m.add_argument("--count", type=int, default=20_000)
    r = sub.add_parser("run")
    r.add_argument("--celeba", type=Path, required=True, help="folder holding img_align_celeba/")
    r.add_argument("--small", type=Path, help="a smaller such folder, for memory against set size")
    args = parser.parse_args()
    if args.command == "make":
        make(args.celeba, args.out, args.count)
    else:
        run(args.celeba, args.small)


if __name__ == "__main__":
    main()
