"""Sample-quality metrics: feature networks, FID/KID/IS through torchmetrics, class coverage, caches."""
