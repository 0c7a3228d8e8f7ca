"""Data layer: image preprocessing (matches PaddleClas / timm eval) and cached, checked datasets."""

from lcpipe.data.dataset import (
    Sample,
    Split,
    check_disjoint,
    fingerprint,
    list_samples,
    load_label_names,
    load_samples,
    load_split,
    samples_fingerprint,
)
from lcpipe.data.preprocess import load_image, preprocess_dict

__all__ = [
    "Sample",
    "Split",
    "check_disjoint",
    "fingerprint",
    "list_samples",
    "load_image",
    "load_label_names",
    "load_samples",
    "load_split",
    "preprocess_dict",
    "samples_fingerprint",
]
