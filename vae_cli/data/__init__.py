"""Data: the dataset registry and its loaders, support transforms, batching, the datamodule."""

from vae_cli.data import celeba as _celeba  # noqa: F401  (registers celeba)
from vae_cli.data import datasets as _builtin  # noqa: F401  (registers the built-in datasets)
