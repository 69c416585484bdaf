"""`model.cuda_graphs`: captured and replayed updates train exactly as eager ones (CUDA graphs
simulated on the CPU: capturing runs nothing, each replay reruns the update into the captured
outputs), checkpoints stay plain, a CPU falls back to eager with the same weights, and what cannot be
captured is refused in one line. tests/test_gpu.py runs real graphs against eager on a GPU."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, Trainer
from torch import Tensor, nn

from ganforge import gan_module
from ganforge.checkpoint import load_checkpoint, load_model
from ganforge.config import instantiate
from ganforge.cuda_graphs import WARMUP, GraphedUpdates
from ganforge.errors import GanforgeError
from ganforge.gan_module import GANLitModule
from ganforge.train import train
from tests.conftest import SMALL_NETWORKS

Thunk = Callable[[], dict[str, Tensor]]
SCHEDULE = (
    "+model.scheduler_g={_target_:torch.optim.lr_scheduler.LinearLR,_partial_:true,"
    "start_factor:1.0,end_factor:0.1,total_iters:12}"
)
# EMA, lazy R1 (two kinds of D update), a scheduler, spectral norm's buffers, DiffAugment's noise
DCGAN = [
    "model=dcgan", *SMALL_NETWORKS["dcgan"], "model.ema_decay=0.9", "model.r1_gamma=1", "model.r1_interval=2",
    "model.discriminator.spectral_norm=true", "model/d_augment=diffaugment", SCHEDULE,
]  # fmt: skip
CDCGAN = ["model=cdcgan", *SMALL_NETWORKS["cdcgan"], "model.mode_seeking=1"]  # labels in both updates
RUN = ["metrics=none", "max_g_steps=12", "trainer.log_every_n_steps=4"]


class Simulated:
    """CUDA graphs on the CPU: a capture records the update without running it (the module's
    weights, buffers and the RNG are put back), a replay reruns it and writes the captured outputs."""

    module: GANLitModule | None = None
    replays = 0

    @classmethod
    def capture_for(
        cls, device: torch.device
    ) -> Callable[[Thunk], tuple[Callable[[], None], dict[str, Tensor]]]:
        def capture(thunk: Thunk) -> tuple[Callable[[], None], dict[str, Tensor]]:
            assert cls.module is not None
            state = {k: v.clone() for k, v in cls.module.state_dict().items()}
            with torch.random.fork_rng(devices=[]):
                outputs = thunk()
            cls.module.load_state_dict(state)

            def replay() -> None:
                cls.replays += 1
                for static, value in zip(outputs.values(), thunk().values(), strict=True):
                    static.copy_(value)

            return replay, outputs

        return capture


class Watch(Callback):
    def setup(self, trainer: Trainer, module: GANLitModule, stage: str) -> None:
        Simulated.module = module


def weights(cfg) -> dict[str, Tensor]:
    ckpt = Path(cfg.paths.output_dir, "checkpoints", "last.ckpt")
    return torch.load(ckpt, weights_only=True)["state_dict"]


@pytest.mark.parametrize("model", [DCGAN, CDCGAN], ids=["dcgan", "cdcgan"])
def test_replayed_updates_train_exactly_as_eager_ones(
    make_cfg, monkeypatch: pytest.MonkeyPatch, model: list[str]
) -> None:
    eager_metrics, _ = train(cfg := make_cfg(*model, *RUN, run="eager"))
    eager = weights(cfg)
    monkeypatch.setattr(gan_module, "graph_capture", Simulated.capture_for)
    Simulated.replays = 0
    graphed_cfg = make_cfg(
        *model, *RUN, "model.cuda_graphs=true", f"+callbacks.watch._target_={__name__}.Watch"
    )
    graphed_metrics, _ = train(graphed_cfg)
    graphed = weights(graphed_cfg)
    # every update after its kind's warm-up calls is a replay: D with and without R1, G
    calls = [6, 6, 12] if model is DCGAN else [12, 12]  # (D with R1, D without,) G
    expected = sum(n - WARMUP for n in calls)
    assert Simulated.replays == expected
    assert graphed.keys() == eager.keys()
    for name, value in eager.items():
        assert torch.equal(graphed[name], value), name
    assert graphed_metrics == eager_metrics
    ckpt = Path(graphed_cfg.paths.output_dir, "checkpoints", "last.ckpt")
    plain = load_model(load_checkpoint(ckpt), torch.device("cpu"), ckpt)  # a plain model loads it
    assert plain._graphed is None and plain.generate(torch.randn(2, plain.latent_dim)).isfinite().all()


def test_cuda_graphs_on_a_cpu_run_eagerly_with_the_same_weights(
    make_cfg, caplog: pytest.LogCaptureFixture
) -> None:
    train(cfg := make_cfg(*DCGAN, *RUN, run="eager"))
    with caplog.at_level("WARNING", logger="ganforge.gan_module"):
        train(fallback := make_cfg(*DCGAN, *RUN, "model.cuda_graphs=true", run="fallback"))
    warned = [r.getMessage() for r in caplog.records if "cuda_graphs" in r.getMessage()]
    assert warned == ["model.cuda_graphs=true needs a CUDA GPU: the updates run eagerly here"]
    eager, fell_back = weights(cfg), weights(fallback)
    assert all(torch.equal(fell_back[name], value) for name, value in eager.items())


@pytest.mark.parametrize(
    ("switches", "precision", "world_size", "message"),
    [
        (
            ["model.compile=true"],
            "bf16-mixed",
            1,
            r"model.cuda_graphs=true and model.compile=true .*keep one",
        ),
        ([], "16-mixed", 1, r"cannot replay fp16's gradient scaling .*trainer.precision=bf16-mixed"),
        ([], "32-true", 2, r"runs on one GPU, not 2 .*set model.cuda_graphs=false$"),
    ],
    ids=["compile", "fp16", "ddp"],
)
def test_what_a_graph_cannot_replay_is_refused_in_one_line_on_cuda(
    make_cfg, switches: list[str], precision: str, world_size: int, message: str
) -> None:
    """train.py asks the module before fit on a CUDA trainer."""
    module = instantiate(make_cfg("model=sngan", "model.cuda_graphs=true", *switches).model)
    with pytest.raises(GanforgeError, match=message) as refused:
        module.check_switches_on_cuda(precision, world_size)
    assert "\n" not in str(refused.value)
    module.cuda_graphs = False
    module.check_switches_on_cuda(precision, world_size)  # the same switches without graphs pass


def read_back(net: nn.Module, thunk: Thunk) -> tuple[Callable[[], None], dict[str, Tensor]]:
    raise RuntimeError("operation not permitted when stream is\ncapturing")


def moved_gradients(net: nn.Module, thunk: Thunk) -> tuple[Callable[[], None], dict[str, Tensor]]:
    """A capture during which the gradient tensors were replaced (something held a reference)."""
    outputs = thunk()
    for p in net.parameters():
        p.grad = p.grad.clone()
    return lambda: None, outputs


@pytest.mark.parametrize(
    ("capture", "message"),
    [
        (
            read_back,
            r"^the step update cannot be captured in a CUDA graph \(operation not permitted when stream is "
            r"capturing\); set model.cuda_graphs=false$",
        ),
        (
            moved_gradients,
            r"^the step update replaced gradient tensors while captured .*model.cuda_graphs=false$",
        ),
    ],
    ids=["read-back", "moved gradients"],
)
def test_an_update_that_cannot_be_replayed_is_refused_in_one_line(capture, message: str) -> None:
    net = nn.Linear(2, 1)

    def update(x: Tensor) -> dict[str, Tensor]:
        net.zero_grad(set_to_none=False)
        loss = net(x).square().mean()
        loss.backward()
        return {"loss": loss}

    graphed = GraphedUpdates(list(net.parameters()), partial(capture, net))
    for _ in range(WARMUP):
        graphed("step", update, torch.ones(4, 2))
    with pytest.raises(GanforgeError, match=message):
        graphed("step", update, torch.ones(4, 2))


@pytest.mark.parametrize("model", ["mlp", "dcgan", "lsgan", "wgan_gp", "sngan", "cdcgan", "csngan"])
def test_the_gpu_fast_preset_trains_every_image_model(make_cfg, model: str) -> None:
    """trainer=gpu_fast on a CPU (accelerator overridden): bf16, NHWC, fused Adam, graphs falling back;
    mlp without channels_last, as the preset says."""
    nhwc = [] if model != "mlp" else ["model.channels_last=false"]
    cfg = make_cfg(
        "trainer=gpu_fast", f"model={model}", *SMALL_NETWORKS[model], *RUN, "trainer.accelerator=cpu", *nhwc
    )
    assert cfg.trainer.precision == "bf16-mixed" and cfg.model.cuda_graphs
    metrics, _ = train(cfg)
    assert metrics["g_step"] == 12
    assert all(math.isfinite(metrics[k]) for k in ("train/d_loss", "train/g_loss"))
