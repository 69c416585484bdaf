"""What running through SLURM costs: one 2-job sweep through each launcher, and a pre-empted job's
timeline (USR1 -> checkpoint -> requeue -> running again) next to an identical uninterrupted job.

Needs a SLURM (scripts/slurm_local.sh up). Run alone on the machine: it times things.

    .venv/bin/python bench/cluster.py [--g-steps 300] [--out /tmp/ganforge-bench-cluster]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
JOB = [
    "data.image_size=16", "data.batch_size=16", "trainer.accelerator=cpu", "logger=csv", "metrics=none",
    "extras.print_config=false", "model.generator.base_channels=8", "model.discriminator.base_channels=8",
]  # fmt: skip
LAUNCHERS = {
    "basic (in-process, one job after the other)": [],
    "submitit_local, torch's default threads per job": [
        "hydra/launcher=submitit_local",
        "hydra.launcher.cpus_per_task=null",
    ],
    "submitit_local, 1 thread per job (the default)": ["hydra/launcher=submitit_local"],
    "submitit_slurm (local SLURM, 1 CPU per job)": [
        "hydra/launcher=submitit_slurm",
        "hydra.launcher.cpus_per_task=1",
    ],
}
STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")


def sweep(out: Path, args: list[str]) -> tuple[subprocess.Popen[str], float]:
    cmd = [sys.executable, str(ROOT / "train.py"), "-m", f"paths.log_dir={out}", *JOB, *args]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    return subprocess.Popen(cmd, cwd=out.parent, text=True, **quiet), time.time()


def when(log: Path, text: str) -> float:
    """The time of the first log line containing `text`."""
    for line in log.read_text().splitlines():
        match = STAMP.match(line)
        if match and text in line:
            return datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    raise LookupError(f"{text!r} not in {log}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--g-steps", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path("/tmp/ganforge-bench-cluster"))
    opts = parser.parse_args()
    shutil.rmtree(opts.out, ignore_errors=True)
    opts.out.mkdir(parents=True)
    budget = [f"max_g_steps={opts.g_steps}"]

    print(f"2-job sweep (model=dcgan,wgan_gp), {opts.g_steps} generator steps each, wall seconds:")
    for i, (name, args) in enumerate(LAUNCHERS.items()):
        proc, start = sweep(opts.out / f"launcher{i}", [*args, *budget, "model=dcgan,wgan_gp"])
        assert proc.wait() == 0, name
        print(f"  {name:<50} {time.time() - start:6.1f}", flush=True)

    out = opts.out / "requeue"
    args = [*LAUNCHERS["submitit_slurm (local SLURM, 1 CPU per job)"], *budget, "+label=straight,preempted"]
    proc, start = sweep(out, [*args, "callbacks.model_checkpoint.last_every_n_g_steps=10"])
    while not list(out.glob("train/multiruns/*/1/checkpoints/last.ckpt")):
        assert proc.poll() is None
        time.sleep(0.1)
    (root,) = out.glob("train/multiruns/*")
    job = sorted(p.name for p in (root / ".submitit").glob("*_1"))[0]
    signalled = time.time()
    subprocess.run(["scancel", "--signal=USR1", job], check=True)
    assert proc.wait() == 0
    log = root / "1" / "train.log"
    stopped = when(log, "requeued SLURM job")
    restarted = when(log, "already holds")
    ends = {j: (root / j / "job.json").stat().st_mtime for j in ("0", "1")}
    g_step = json.loads((root / "1" / "job.json").read_text())["g_step"]
    print(f"pre-empted job (USR1 {signalled - start:.1f} s after submission; finished at g_step {g_step}):")
    print(f"  USR1 -> checkpoint written and job requeued      {stopped - signalled:6.1f} s")
    print(f"  requeued -> training again (SLURM hold + start)  {restarted - stopped:6.1f} s")
    print(f"  ends after the uninterrupted job by              {ends['1'] - ends['0']:6.1f} s")
    conf = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True).stdout
    hold = re.search(r"cred_expire=(\d+)", conf)
    print(f"  (SLURM's requeue hold, AuthInfo cred_expire: {hold[1] if hold else '120 (default)'} s)")


if __name__ == "__main__":
    main()
