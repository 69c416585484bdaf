"""`GANLitModule`: one training module for every GAN, with alternating manual updates.

Step accounting. Every batch drives one discriminator update; every `d_steps_per_g`-th batch also
drives one generator update. So each discriminator update sees fresh real data, and after `g`
generator updates exactly `g * d_steps_per_g` discriminator updates have run. Lightning's
`global_step` counts *optimizer* steps of both networks, i.e. `g * (d_steps_per_g + 1)`; ganforge's
own counters `g_step`/`d_step` are what budgets, sample grids and checkpoint names refer to.

Speed switches (README "Speed"): `compile` runs G and D through `torch.compile` (the modules
themselves stay uncompiled, so checkpoints hold plain weights; the penalties' double backward runs
eagerly, since compiled graphs have none); `channels_last` stores conv weights and image batches
NHWC, the layout tensor cores read; `cuda_graphs` captures each kind of update's forward and
backward pass once and replays it (`ganforge.cuda_graphs`; the optimizer steps stay outside); under
`trainer.precision=16-mixed` each network keeps its own gradient scaler (below).

Statistics (losses, D's scores, penalties) stay on the device and are logged as each logging
interval's means (`ganforge.training_stats`): a batch between logging steps makes the host wait for
nothing (README "Speed").

Conditional models (`num_classes` set) pass class labels to both networks: the discriminator sees
real images with their labels and fakes with the labels they were generated for, which are the
real batch's labels (so generated classes follow the data's class frequencies).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.core.optimizer import LightningOptimizer
from lightning.pytorch.plugins.precision import MixedPrecision
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from ganforge.checkpoint_layout import GRAD_SCALERS, RNG, STEPS, TRAINING_STATS
from ganforge.cuda_graphs import GraphedUpdates, graph_capture
from ganforge.ema import GeneratorEMA
from ganforge.errors import GanforgeError, TrainingDiverged
from ganforge.losses import GANLoss
from ganforge.mixed_precision import casts_cached
from ganforge.regularizers import gradient_penalty, mode_seeking_ratio, r1_penalty
from ganforge.resume import apply_optimizer_settings, fit_ema_state
from ganforge.rng import rng_states, set_rng_states
from ganforge.sampling import NoiseSampler
from ganforge.training_stats import TrainingStats

OptimizerFactory = Callable[[Iterable[nn.Parameter]], Optimizer]
SchedulerFactory = Callable[[Optimizer], LRScheduler]

log = logging.getLogger(__name__)

NETWORKS = ("discriminator", "generator")


def optimizer_steps(g_steps: int, d_steps_per_g: int) -> int:
    """Lightning `max_steps`/`every_n_train_steps` equivalent of a number of generator steps."""
    return g_steps * (d_steps_per_g + 1)


class GANLitModule(LightningModule):
    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        loss: GANLoss,
        optimizer_g: OptimizerFactory,
        optimizer_d: OptimizerFactory,
        scheduler_g: SchedulerFactory | None = None,
        scheduler_d: SchedulerFactory | None = None,
        d_steps_per_g: int = 1,
        num_fixed_samples: int = 64,
        fixed_noise_seed: int = 0,
        gradient_penalty: float = 0.0,
        r1_gamma: float = 0.0,
        r1_interval: int = 1,
        mode_seeking: float = 0.0,
        ema_decay: float | None = None,
        d_augment: nn.Module | None = None,
        num_classes: int | None = None,
        compile: bool = False,
        channels_last: bool = False,
        cuda_graphs: bool = False,
        augment: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if augment is not None:  # the name before d_augment; still in older configs and checkpoints
            if d_augment is not None:
                raise GanforgeError("model.augment is the old name of model.d_augment: set only d_augment")
            log.warning("model.augment is deprecated: it is model.d_augment (model/d_augment=diffaugment)")
            d_augment = augment
        networks = {"generator": generator, "discriminator": discriminator}
        built_for = {name: getattr(net, "num_classes", None) for name, net in networks.items()}
        if any(n != num_classes for n in built_for.values()):
            found = ", ".join(f"{k} {v}" for k, v in built_for.items())
            raise GanforgeError(
                f"model.num_classes={num_classes} but the networks are built for {found} classes; set "
                "num_classes once, at model.num_classes (the networks' configs read it from there)"
            )
        if d_steps_per_g < 1:
            raise GanforgeError(f"model.d_steps_per_g must be >= 1, got {d_steps_per_g}")
        if r1_interval < 1:
            raise GanforgeError(f"model.r1_interval must be >= 1 (1: R1 at every D step), got {r1_interval}")
        if ema_decay is not None and not 0.0 < ema_decay < 1.0:
            raise GanforgeError(f"model.ema_decay must be in (0, 1) (e.g. 0.999) or null, got {ema_decay}")
        if channels_last and not any(
            isinstance(m, nn.Conv2d | nn.ConvTranspose2d) for m in generator.modules()
        ):
            raise GanforgeError(
                "model.channels_last=true needs a convolutional model (dcgan, sngan and their variants); "
                "drop it for this one"
            )
        self.automatic_optimization = False
        self.generator = generator
        self.discriminator = discriminator
        self.loss = loss
        self.optimizer_g = optimizer_g
        self.optimizer_d = optimizer_d
        self.scheduler_g = scheduler_g
        self.scheduler_d = scheduler_d
        self.d_steps_per_g = d_steps_per_g
        self.gradient_penalty = gradient_penalty
        self.r1_gamma = r1_gamma
        self.r1_interval = r1_interval
        self.mode_seeking = mode_seeking
        self.d_augment = d_augment  # e.g. DiffAugment: applied to every image D sees, real and fake
        self.num_classes = num_classes
        self.compile_networks = compile  # not `self.compile`: that is nn.Module.compile()
        self.channels_last = channels_last
        self.cuda_graphs = cuda_graphs
        self._graphed: GraphedUpdates | None = None  # on CUDA with cuda_graphs: the updates, captured
        self._compiled: dict[str, Callable[..., Tensor]] = {}  # a plain dict: not submodules, not saved
        self._grad_scalers: dict[str, torch.amp.GradScaler] = {}  # 16-mixed only, see `_updating`
        self._mixed_precision = False  # under autocast: each update casts each weight once
        # EMA of the generator's weights and batch-norm statistics (Yazici et al. 2019): samples,
        # grids and metrics come from it when it is on
        self.generator_ema = (
            GeneratorEMA(generator, ema_decay).requires_grad_(False) if ema_decay is not None else None
        )
        self.g_step = 0
        self.d_step = 0
        self._resumed_rng: dict[str, Any] | None = None
        # losses, D's scores and penalties: on the device, read back once per logging interval
        self.stats = TrainingStats()
        self.logged: dict[str, float] = {}  # the last interval's means, for the progress bar
        self._frozen_for_g: list[nn.Parameter] = []  # D's trainable parameters (`_updating`)
        self._checked_d_step: int | None = None  # the batch `raise_if_diverged` last found all finite
        # the seeded sampler: the grid noise must not depend on (or disturb) the global seed
        noise = NoiseSampler(generator.latent_dim, fixed_noise_seed).noise(range(num_fixed_samples))
        self.register_buffer("fixed_noise", noise)  # persistent: saved in (and restored from) checkpoints
        if num_classes is not None:  # grid column j shows class j (the grid has num_classes columns)
            self.register_buffer("fixed_labels", self.balanced_labels(num_fixed_samples, torch.device("cpu")))

    @property
    def latent_dim(self) -> int:
        return self.generator.latent_dim

    @property
    def conditional(self) -> bool:
        return self.num_classes is not None

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        generator = self._compiled.get("generator", self.generator)
        return generator(z, labels) if self.conditional else generator(z)

    def sample_noise(self, n: int) -> Tensor:
        return torch.randn(n, self.latent_dim, device=self.device)

    def balanced_labels(self, n: int, device: torch.device | None = None) -> Tensor:
        """0, 1, ..., K-1, 0, 1, ...: every class equally often (to within one)."""
        return torch.arange(n, device=device or self.device) % self.num_classes

    def setup(self, stage: str) -> None:
        if stage == "fit":
            self._set_up_speed()
        data = self.trainer.datamodule if self._trainer is not None else None
        if data is not None:
            self._check_classes(data)
            if self.channels_last and hasattr(data, "memory_format"):  # batches arrive NHWC
                data.memory_format = torch.channels_last

    def check_switches_on_cuda(self, precision: str, world_size: int) -> None:
        """Refuse what fails on CUDA, before anything is built: compile + channels_last with
        transposed convolutions crashes in G's backward there (PyTorch issue 171622: inductor's
        `convolution_backward` predicts NCHW strides for channels_last ConvTranspose2d; CPU is fine);
        a CUDA graph cannot replay what decides on the host at every step or reduces across ranks."""
        transposed = any(isinstance(m, nn.ConvTranspose2d) for m in self.generator.modules())
        if self.compile_networks and self.channels_last and transposed:
            raise GanforgeError(
                "model.compile=true with model.channels_last=true crashes in the generator's backward on "
                "CUDA (transposed convolutions, PyTorch issue 171622); drop one of them, e.g. "
                "model.compile=false"
            )
        if not self.cuda_graphs:
            return
        if self.compile_networks:
            raise GanforgeError(
                "model.cuda_graphs=true and model.compile=true both take over the kernel launches; "
                "keep one of them"
            )
        if precision == "16-mixed":
            raise GanforgeError(
                "model.cuda_graphs=true cannot replay fp16's gradient scaling (it checks for overflow on "
                "the host at every step); use trainer.precision=bf16-mixed or set model.cuda_graphs=false"
            )
        if world_size > 1:
            raise GanforgeError(
                f"model.cuda_graphs=true runs on one GPU, not {world_size} (DDP reduces gradients during "
                "the backward pass, which the graphs do not capture); set model.cuda_graphs=false"
            )

    def _set_up_speed(self) -> None:
        self._frozen_for_g = [p for p in self.discriminator.parameters() if p.requires_grad]
        if self.channels_last:
            for net in (self.generator, self.discriminator, self.generator_ema):
                if net is not None:
                    net.to(memory_format=torch.channels_last)
        if self.compile_networks and not self._compiled:
            self._compiled = {name: torch.compile(getattr(self, name)) for name in NETWORKS}
        if self.cuda_graphs and self._graphed is None:
            device = self.trainer.strategy.root_device if self._trainer is not None else self.device
            capture = graph_capture(device)
            if capture is None:
                log.warning("model.cuda_graphs=true needs a CUDA GPU: the updates run eagerly here")
            else:
                networks = [*self.generator.parameters(), *self.discriminator.parameters()]
                self._graphed = GraphedUpdates([p for p in networks if p.requires_grad], capture)
        plugin = self.trainer.precision_plugin if self._trainer is not None else None
        self._mixed_precision = isinstance(plugin, MixedPrecision)
        if isinstance(plugin, MixedPrecision) and plugin.scaler is not None:
            # Lightning's one scaler would let an overflow in D's update shrink G's scale (and skip
            # G's steps) and the other way round: each network gets its own copy of it instead
            self._grad_scalers = {name: copy.deepcopy(plugin.scaler) for name in NETWORKS}
            plugin.scaler = None

    def _check_classes(self, data: Any) -> None:
        """A conditional model needs labelled data with exactly its number of classes."""
        if not self.conditional:
            return
        have = getattr(data, "num_classes", None)
        name = getattr(data, "name", type(data).__name__)
        if not have or have < 2:
            raise GanforgeError(
                f"this model is class-conditional but {name} has no class labels; train an unconditional "
                "model (e.g. model=dcgan) or use labelled data (mnist, fashion_mnist, cifar10, digits, "
                "image_folder with one sub-folder per class)"
            )
        if have != self.num_classes:
            raise GanforgeError(
                f"model.num_classes={self.num_classes} but {name} has {have} classes; "
                f"set model.num_classes={have}"
            )

    @property
    def sampling_generator(self) -> nn.Module:
        """The network that samples, grids and metrics come from: the EMA copy when there is one."""
        return self.generator if self.generator_ema is None else self.generator_ema.module

    @torch.no_grad()
    def generate(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """Samples for `z` (images in [-1, 1]), with the generator in eval mode (batch-norm running
        statistics). Conditional models generate class `labels[i]` for `z[i]`; balanced classes when
        no labels are given. Unconditional models refuse labels."""
        z = z.to(self.device)
        if not self.conditional and labels is not None:
            raise GanforgeError(
                "labels were given to an unconditional model; only cdcgan/csngan-style models take them"
            )
        if self.conditional:
            labels = self.balanced_labels(len(z)) if labels is None else labels.to(self.device)
            if labels.shape != (len(z),) or labels.min() < 0 or labels.max() >= self.num_classes:
                raise GanforgeError(
                    f"labels must be {len(z)} class indices in [0, {self.num_classes}), one per noise vector"
                )
        net = self.sampling_generator
        was_training = net.training
        net.eval()
        try:
            return net(z, labels) if self.conditional else net(z)
        finally:
            net.train(was_training)

    def discriminate(
        self, x: Tensor, labels: Tensor | None = None, *, augment: bool = True, eager: bool = False
    ) -> Tensor:
        """D's output on `x`: through `d_augment` first unless `augment` is off (what the losses see;
        the penalties act on D itself); `eager` bypasses `torch.compile` (a double backward needs it)."""
        if augment and self.d_augment is not None:
            x = self.d_augment(x)
        critic = self.discriminator if eager else self._compiled.get("discriminator", self.discriminator)
        return critic(x, labels) if self.conditional else critic(x)

    def configure_optimizers(self) -> Any:
        # named parameter groups: LearningRateMonitor logs lr-<Optimizer>/generator and .../discriminator
        opt_g = self.optimizer_g([{"params": self.generator.parameters(), "name": "generator"}])
        opt_d = self.optimizer_d([{"params": self.discriminator.parameters(), "name": "discriminator"}])
        schedulers = [
            f(o) for f, o in ((self.scheduler_g, opt_g), (self.scheduler_d, opt_d)) if f is not None
        ]
        return [opt_g, opt_d], schedulers

    @contextmanager
    def _updating(self, network: str) -> Iterator[LightningOptimizer]:
        """`network`'s optimizer, with D frozen while G updates; under mixed precision, each weight
        cast once for the update (`ganforge.mixed_precision`); under 16-mixed, Lightning's precision
        plugin pointed at that network's gradient scaler: it scales the backward, unscales, skips a
        step with non-finite gradients and adapts the scale, for this network only.

        One `requires_grad_` per D parameter per G update, as a plain loop does (Lightning's
        `toggled_optimizer` walks every parameter of both optimisers twice). D's update needs no
        freezing: G runs under `no_grad` there."""
        opt_g, opt_d = self.optimizers()
        optimizer, frozen = (opt_g, self._frozen_for_g) if network == "generator" else (opt_d, [])
        scaler = self._grad_scalers.get(network)
        plugin = self.trainer.precision_plugin
        for p in frozen:
            p.requires_grad_(False)
        if scaler is not None:
            plugin.scaler = scaler
        try:
            with casts_cached(self._mixed_precision):
                yield optimizer
        finally:
            if scaler is not None:
                plugin.scaler = None
            for p in frozen:
                p.requires_grad_(True)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        real = batch[0]
        if self.channels_last and real.dim() == 4:
            real = real.contiguous(memory_format=torch.channels_last)
        labels = batch[1] if self.conditional else None
        self.discriminator_step(real, labels)
        if self.d_step % self.d_steps_per_g == 0:
            self.generator_step(len(real), labels)
        if self.logging_due():
            self.log_statistics()

    def discriminator_step(self, real: Tensor, labels: Tensor | None) -> None:
        """max_D  E[log D(x)] + E[log(1 - D(G(z)))] (or the loss's own form), minus the penalties."""
        r1_due = self.r1_due()
        with self._updating("discriminator") as opt_d:
            update = partial(self.discriminator_update, opt_d, r1_due)
            stats = self._run("discriminator" + " with R1" * r1_due, update, real, labels)
            opt_d.step()
        self.stats.record(self.g_step, stats)
        self.d_step += 1

    def discriminator_update(
        self, opt_d: LightningOptimizer, r1_due: bool, real: Tensor, labels: Tensor | None = None
    ) -> dict[str, Tensor]:
        """D's loss and gradients (the step is the caller's); its statistics."""
        with torch.no_grad():
            fake = self(self.sample_noise(len(real)), labels)
        out_real, out_fake = self.discriminate(real, labels), self.discriminate(fake, labels)
        penalties = self.penalties(real, fake, labels, r1_due)
        d_loss = self.loss.d_loss(out_real, out_fake)
        if penalties:
            d_loss = d_loss + sum(w * v for w, v in penalties.values())
        opt_d.zero_grad(set_to_none=self._graphed is None)  # graphs write into the same gradients
        self.manual_backward(d_loss)
        with torch.no_grad():
            scores = {"d_real": self.loss.score(out_real).mean(), "d_fake": self.loss.score(out_fake).mean()}
        return {"d_loss": d_loss, **scores, **{name: value for name, (_, value) in penalties.items()}}

    def r1_due(self) -> bool:
        """Lazy R1 (StyleGAN2): every `r1_interval`-th D step, weighted by the interval (`penalties`),
        so the average pull stays gamma / 2 at a fraction of the cost."""
        return bool(self.r1_gamma) and self.d_step % self.r1_interval == 0

    def penalties(
        self, real: Tensor, fake: Tensor, labels: Tensor | None, r1_due: bool
    ) -> dict[str, tuple[float, Tensor]]:
        """{name: (weight, unweighted penalty)} due at this D step. They act on D itself, unaugmented
        and uncompiled (they differentiate twice)."""
        critic = partial(self.discriminate, labels=labels, augment=False, eager=True)
        due: dict[str, tuple[float, Tensor]] = {}
        if self.gradient_penalty:
            due["gp"] = (self.gradient_penalty, gradient_penalty(critic, real, fake))
        if r1_due:
            due["r1"] = (0.5 * self.r1_gamma * self.r1_interval, r1_penalty(critic, real))
        return due

    def generator_step(self, n: int, labels: Tensor | None) -> None:
        """min_G  -E[log D(G(z))] (or the loss's own form), plus mode seeking; then the EMA and the
        schedulers advance, once per generator step."""
        with self._updating("generator") as opt_g:
            stats = self._run(f"generator ({n} samples)", partial(self.generator_update, opt_g, n), labels)
            opt_g.step()
        self.stats.record(self.g_step, stats)
        self.g_step += 1
        if self.generator_ema is not None:
            self.generator_ema.update_parameters(self.generator)
        for scheduler in self._schedulers():
            scheduler.step()

    def generator_update(
        self, opt_g: LightningOptimizer, n: int, labels: Tensor | None = None
    ) -> dict[str, Tensor]:
        """G's loss and gradients through a frozen D (the step is the caller's); its statistics."""
        z = self.sample_noise(n)
        if self.mode_seeking and labels is not None:  # pairs (i, i + n/2) share their class
            h = n // 2
            labels = torch.cat([labels[:h], labels[:h], labels[2 * h :]])
        fake = self(z, labels)
        g_loss = self.loss.g_loss(self.discriminate(fake, labels))
        extra: dict[str, Tensor] = {}
        if self.mode_seeking:
            extra["mode_seeking_ratio"] = ratio = mode_seeking_ratio(fake, z)
            g_loss = g_loss + self.mode_seeking / (ratio + 1e-5)
        opt_g.zero_grad(set_to_none=self._graphed is None)
        self.manual_backward(g_loss)
        return {"g_loss": g_loss, **extra}

    def _run(
        self, name: str, update: Callable[..., dict[str, Tensor]], *inputs: Tensor | None
    ) -> dict[str, Tensor]:
        """`update(*inputs)`: eagerly, or replayed from its CUDA graph under `cuda_graphs`."""
        given = [x for x in inputs if x is not None]  # labels only for conditional models
        return update(*given) if self._graphed is None else self._graphed(name, update, *given)

    def logging_due(self) -> bool:
        """Every `trainer.log_every_n_steps` batches (the batches Lightning writes rows for), at the
        end of an epoch and at the last step: the only batches that read statistics back."""
        trainer = self.trainer
        final = trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps
        return self.d_step % trainer.log_every_n_steps == 0 or final or trainer.is_last_batch

    def log_statistics(self) -> None:
        """Log the interval's means (one read-back), with the generator step in the same row."""
        means = self.stats.means()
        self.raise_if_diverged()
        self.logged = {"g_step": float(self.g_step), **{f"train/{k}": v for k, v in means.items()}}
        self.log_dict(self.logged, on_step=True, on_epoch=False)

    def raise_if_diverged(self) -> None:
        """Raise, on every rank, once any rank has seen a non-finite statistic (reads them back),
        so that a sweep records the run as failed and no checkpoint after the NaN is written."""
        if self._checked_d_step == self.d_step:
            return  # decided at this batch already (the logging step, then the guard or a checkpoint)
        found = self.stats.read()
        decide = self.trainer.strategy.reduce_boolean_decision if self._trainer else None
        if not (decide(found is not None, all=False) if decide else found is not None):
            self._checked_d_step = self.d_step  # the same on every rank: they all decided here
            return
        if found is None:
            raise TrainingDiverged(
                f"training diverged at g_step {self.g_step}: a loss is not finite on another rank"
            )
        what = {"d_loss": "the discriminator loss", "g_loss": "the generator loss"}.get(
            found.name, f"train/{found.name}"
        )
        raise TrainingDiverged(f"training diverged at g_step {found.g_step}: {what} is {found.value}")

    def on_train_end(self) -> None:
        self.raise_if_diverged()

    def _schedulers(self) -> list[Any]:
        schedulers = self.lr_schedulers()
        if schedulers is None:
            return []
        return schedulers if isinstance(schedulers, list) else [schedulers]

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[STEPS] = {"g_step": self.g_step, "d_step": self.d_step}
        # saved at a batch boundary: the noise of the next batch is drawn from exactly these states
        checkpoint[RNG] = rng_states()
        checkpoint[TRAINING_STATS] = self.stats.state_dict()
        if self._grad_scalers:
            checkpoint[GRAD_SCALERS] = {name: s.state_dict() for name, s in self._grad_scalers.items()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        steps = checkpoint.get(STEPS)
        if steps is None:
            raise GanforgeError(f"checkpoint has no '{STEPS}': it was not written by ganforge's GANLitModule")
        self.g_step, self.d_step = steps["g_step"], steps["d_step"]
        self._resumed_rng = checkpoint.get(RNG)
        if TRAINING_STATS in checkpoint:  # older checkpoints: the first interval averages fewer steps
            self.stats.load_state_dict(checkpoint[TRAINING_STATS])
        # what this run's config says wins over the checkpoint's (ganforge.resume says which and why)
        apply_optimizer_settings(
            checkpoint, [self.optimizer_g, self.optimizer_d], [self.scheduler_g, self.scheduler_d]
        )
        fit_ema_state(checkpoint["state_dict"], self.generator_ema is not None)
        for name in ("fixed_noise", "fixed_labels"):  # a new num_fixed_samples: a new grid
            stored = checkpoint["state_dict"].get(name)
            if stored is not None and stored.shape != getattr(self, name, stored).shape:
                checkpoint["state_dict"][name] = getattr(self, name)
        # restored after `setup` made this run's scalers; a run resumed at another precision has none
        for name, state in checkpoint.get(GRAD_SCALERS, {}).items():
            if name in self._grad_scalers:
                self._grad_scalers[name].load_state_dict(state)

    def on_train_start(self) -> None:
        """Resuming: restore the RNG after everything that set-up draws (seeding, loaders, metrics)."""
        if self._resumed_rng is not None:
            set_rng_states(self._resumed_rng)
            self._resumed_rng = None
