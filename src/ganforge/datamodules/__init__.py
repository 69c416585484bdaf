"""One `LightningDataModule` per data set; all yield (image in [-1, 1], int label) batches on the device."""
