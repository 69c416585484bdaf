"""Generator/discriminator pairs. Each is built from the data's `image_size` and `channels`.

Contract: a generator exposes `latent_dim` and maps (B, latent_dim) noise to (B, C, H, W) images
in [-1, 1]; a discriminator maps images to (B,) raw outputs (logits or critic values). Conditional
networks expose `num_classes` and take the (B,) class labels as a second argument.
"""
