"""The floor ganforge's trainer is measured against: a plain PyTorch loop over the same data loader,
networks, losses and optimisers, doing the two updates and nothing else (D on real and G's fakes
made under no_grad, then G with D frozen; fp32, no logging, no checks). Used by bench/throughput.py
(speed), bench/host_overhead.py and tests/test_host_waits.py (host cost per step)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import torch
from omegaconf import DictConfig

from ganforge.config import instantiate


def plain_loop(cfg: DictConfig, steps: int, device: torch.device) -> Iterator[int]:
    """Run `steps` steps of the configured GAN, yielding each step's number once it is queued."""
    torch.manual_seed(cfg.seed)
    data = instantiate(cfg.data)
    data.prepare_data()
    data.setup("fit")
    module = instantiate(cfg.model)
    g, d, loss = module.generator.to(device), module.discriminator.to(device), module.loss
    opt_g, opt_d = module.optimizer_g(g.parameters()), module.optimizer_d(d.parameters())
    batches = itertools.chain.from_iterable(itertools.repeat(data.train_dataloader()))
    for step, batch in enumerate(itertools.islice(batches, steps), start=1):
        images = batch[0].to(device, non_blocking=True)
        real = data.on_after_batch_transfer((images, batch[1]), 0)[0]  # uint8 -> [-1, 1] on the device
        with torch.no_grad():
            fake = g(torch.randn(real.shape[0], g.latent_dim, device=device))
        d_loss = loss.d_loss(d(real), d(fake))
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        d.requires_grad_(False)
        g_loss = loss.g_loss(d(g(torch.randn(real.shape[0], g.latent_dim, device=device))))
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        d.requires_grad_(True)
        yield step
