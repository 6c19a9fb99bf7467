"""Datasets: the registry (:mod:`~threefactor.data.registry`), the built-ins (MNIST, Fashion-MNIST,
Kuzushiji-MNIST, CIFAR-10: :mod:`~threefactor.data.datasets`), datasets given by path
(:mod:`~threefactor.data.paths`), file formats, downloads, the bundled sample and augmentation.

Importing this package registers the built-ins and the path reader, so a lookup in the registry
always sees them.
"""
from threefactor.data.datasets import (BUNDLED_CHOICES, DATASETS, BundledSampleWarning, DataError, Dataset,
                                       load_cifar10_dir, load_dataset, load_mnist_dir, preprocess_cifar10,
                                       preprocess_mnist, read_idx, split_validation)
from threefactor.data import paths as _paths  # noqa: F401  (installs the path reader)
from threefactor.data.registry import register_dataset

__all__ = ["BUNDLED_CHOICES", "DATASETS", "BundledSampleWarning", "DataError", "Dataset", "load_cifar10_dir",
           "load_dataset", "load_mnist_dir", "preprocess_cifar10", "preprocess_mnist", "read_idx",
           "split_validation", "register_dataset"]
