"""One evaluation of a checkpoint at N generated samples: with cached reference statistics vs without.

    .venv/bin/python bench/eval_cache.py --ckpt <checkpoint> --num-samples 10000 --repeats 3

"Without" computes the reference statistics (num_reference real images through the feature network)
before generating; "with" loads them. The metric classifier is cached in both (trained beforehand),
so the difference is the reference pass alone. Runs alternate; medians and their ratio are printed.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from ganforge.checkpoint import load_checkpoint, load_model, stored_config
from ganforge.config import instantiate, prepare_hydra
from ganforge.metrics.evaluator import build_evaluator

ROOT = Path(__file__).resolve().parents[1]


def once(settings: dict, datamodule, model, device: torch.device) -> float:
    start = time.perf_counter()
    build_evaluator(settings, datamodule, device).evaluate(model, device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--num-samples", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-dir", default=None, help="where the checkpoint's data set lives now")
    args = parser.parse_args()

    prepare_hydra()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        metrics_cfg = compose("eval", overrides=["ckpt_path=x", "metrics=classifier"]).metrics
    device = torch.device("cpu")
    checkpoint = load_checkpoint(args.ckpt)
    model = load_model(checkpoint, device)
    data_cfg = stored_config(checkpoint).data
    if args.data_dir:
        data_cfg.data_dir = args.data_dir
    datamodule = instantiate(data_cfg)
    datamodule.setup("fit")

    cache = Path(tempfile.mkdtemp())
    settings = dict(metrics_cfg) | {"num_samples": args.num_samples, "cache_dir": str(cache)}
    settings["classifier"] = dict(metrics_cfg.classifier)
    build_evaluator(settings, datamodule, device)  # trains/caches the classifier: not what we time
    times: dict[str, list[float]] = {"without": [], "with": []}
    for _ in range(args.repeats):
        shutil.rmtree(cache / "reference", ignore_errors=True)
        times["without"].append(once(settings, datamodule, model, device))
        times["with"].append(once(settings, datamodule, model, device))
    n_ref = min(settings["num_reference"], len(datamodule.data_train))
    threads = torch.get_num_threads()
    print(f"{datamodule.name}, {args.num_samples} generated, {n_ref} reference, {threads} threads")
    for name, values in times.items():
        print(f"{name:>7} cached reference statistics: {', '.join(f'{t:.1f}' for t in values)} s")
    ratio = statistics.median(times["without"]) / statistics.median(times["with"])
    print(f"median speed-up from the cache: {ratio:.2f}x")
    shutil.rmtree(cache)


if __name__ == "__main__":
    main()
