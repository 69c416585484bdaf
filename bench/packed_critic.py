"""How fast can a fresh critic tell a frozen 2-D generator from its data, with and without packing?

    .venv/bin/python bench/packed_critic.py logs/bench/<a 2-D run>/checkpoints/last.ckpt --packs 1 2 4

Why this exists: `pacgan_2d` spreads its samples over the whole grid square and never sharpens (see
BENCHMARKS.md, "Mode collapse"). Here the generator is frozen and only a new critic of the run's own
architecture and optimiser (apart from `pack`) learns; its loss is printed every `--every` steps
(2 ln 2 = 1.386: it cannot tell the two apart). If an unpacked critic separates them at once and a
packed one takes thousands of steps, a packed critic in a GAN, chasing a moving generator, lags behind.
"""

from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F

from ganforge.checkpoint import load_checkpoint, load_model, stored_config
from ganforge.config import instantiate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--packs", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--every", type=int, default=1000)
    parser.add_argument("--num-samples", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    checkpoint = load_checkpoint(args.checkpoint)
    cfg = stored_config(checkpoint)
    model = load_model(checkpoint, torch.device("cpu"))
    data = instantiate(cfg.data)
    data.setup()
    real = data.data_train.tensors[0][: args.num_samples]
    noise = torch.randn(len(real), model.latent_dim, generator=torch.Generator().manual_seed(args.seed))
    fake = model.generate(noise)
    batch = cfg.data.batch_size

    print(f"critic loss of a fresh critic vs {args.checkpoint} (2 ln 2 = {2 * math.log(2):.3f}: chance)")
    print("| pack | " + " | ".join(f"step {s}" for s in range(args.every, args.steps + 1, args.every)) + " |")
    print("|---" * (1 + args.steps // args.every) + "|")
    for pack in args.packs:
        torch.manual_seed(args.seed)
        critic = instantiate(cfg.model.discriminator, pack=pack)
        optimizer = instantiate(cfg.model.optimizer_d)(critic.parameters())
        losses = []
        for step in range(1, args.steps + 1):
            r, f = (x[torch.randint(len(x), (batch,))] for x in (real, fake))
            loss = F.softplus(-critic(r)).mean() + F.softplus(critic(f)).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if step % args.every == 0:
                losses.append(f"{loss.item():.3f}")
        print(f"| {pack} | " + " | ".join(losses) + " |", flush=True)


if __name__ == "__main__":
    main()
