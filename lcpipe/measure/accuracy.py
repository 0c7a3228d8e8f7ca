"""Accuracy and INT8-vs-FP32 fidelity from logits (pure numpy), and exact merging of shard counts.

Two forms. ``accuracy`` / ``compare_logits`` give the validate stage's rates for a whole eval set.
``EvalCounts`` is the mergeable form for sharded evaluation (measure.shards): a shard returns
sums, never rates: correct top-1/top-k counts, agreement and flip counts, the image count, and
sums of per-image cosines and logit errors. Merging adds them (and takes min/max), so
merge(shards) equals the unsharded evaluation bit for bit:

* every image runs alone (batch 1), so its logits do not depend on which shard it is in;
* float sums are kept as exact fractions of per-image float64 values, so their total does not
  depend on how the images were grouped (floating-point addition is not associative).

Rates (top-1, agreement, mean cosine, ...) are computed once, from the merged sums.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from fractions import Fraction
from typing import Any

import numpy as np

_FRACTIONS = ("cosine_sum", "abs_err_sum", "sq_err_sum")


def top_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest scores along the last axis, highest first (k capped at the number
    of classes). argpartition, then a sort of k: a server's top-k, cheap inside timed loops too."""
    k = min(k, scores.shape[-1])
    idx = np.argpartition(-scores, k - 1, axis=-1)[..., :k]
    order = np.argsort(-np.take_along_axis(scores, idx, -1), axis=-1)
    return np.take_along_axis(idx, order, -1)


def softmax(z: np.ndarray) -> np.ndarray:
    """Probabilities along the last axis (one image or a batch), in the dtype of ``z``."""
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@dataclass
class EvalCounts:
    images: int = 0
    labeled: int = 0  # images with a label (top-1/top-k/flips count only these)
    classes: int = 0
    top_k: int = 0
    fp32_top1: int = 0
    fp32_topk: int = 0
    int8_top1: int = 0
    int8_topk: int = 0
    agree: int = 0  # INT8 argmax == FP32 argmax
    lost: int = 0  # FP32 right, INT8 wrong
    gained: int = 0  # FP32 wrong, INT8 right
    cosine_sum: Fraction = field(default_factory=Fraction)  # sum over images of cos(fp32, int8)
    abs_err_sum: Fraction = field(default_factory=Fraction)  # sum over images of sum_c |fp32 - int8|
    sq_err_sum: Fraction = field(default_factory=Fraction)  # sum over images of sum_c (fp32 - int8)^2
    cosine_min: float = math.inf
    max_abs_diff: float = 0.0
    max_abs_fp32: float = 0.0

    def __add__(self, other: EvalCounts) -> EvalCounts:
        if self.images and other.images and (self.classes, self.top_k) != (other.classes, other.top_k):
            raise ValueError(f"cannot merge shards of different models/top-k: {(self.classes, self.top_k)} vs "
                             f"{(other.classes, other.top_k)}")
        out = EvalCounts()
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if f.name in ("classes", "top_k"):
                setattr(out, f.name, a or b)
            elif f.name == "cosine_min":
                setattr(out, f.name, min(a, b))
            elif f.name.startswith("max_"):
                setattr(out, f.name, max(a, b))
            else:
                setattr(out, f.name, a + b)
        return out

    def summary(self) -> dict[str, Any]:
        """Rates from the sums (None where undefined), named like validation.json's figures."""
        n, lab, elems = self.images, self.labeled, self.images * self.classes

        def rate(count: int, total: int) -> float | None:
            return count / total if total else None

        labeled_all = lab == n and n > 0
        return {
            "images": n, "labeled": lab, "classes": self.classes, "top_k": self.top_k,
            "fp32_top1": rate(self.fp32_top1, lab) if labeled_all else None,
            "fp32_topk": rate(self.fp32_topk, lab) if labeled_all else None,
            "int8_top1": rate(self.int8_top1, lab) if labeled_all else None,
            "int8_topk": rate(self.int8_topk, lab) if labeled_all else None,
            "agreement": rate(self.agree, n),
            "flips": {"lost": self.lost, "gained": self.gained} if labeled_all else {"lost": None, "gained": None},
            "cosine": float(self.cosine_sum / n) if n else None,
            "cosine_min": self.cosine_min if n else None,
            "mean_abs_logit_diff": float(self.abs_err_sum / elems) if elems else None,
            "logit_mse": float(self.sq_err_sum / elems) if elems else None,
            "max_abs_logit_diff": self.max_abs_diff if n else None,
            "rel_logit_error": self.max_abs_diff / max(self.max_abs_fp32, 1e-30) if n else None,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe; fractions as "num/den" strings so a merge after reloading stays exact."""
        d: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in _FRACTIONS:
            d[name] = str(d[name])
        d["cosine_min"] = None if math.isinf(self.cosine_min) else self.cosine_min
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EvalCounts:
        d = dict(d)
        for name in _FRACTIONS:
            d[name] = Fraction(d[name])
        d["cosine_min"] = math.inf if d.get("cosine_min") is None else d["cosine_min"]
        return cls(**d)


def merge(shards: Iterable[EvalCounts]) -> EvalCounts:
    out = EvalCounts()
    for s in shards:
        out = out + s
    return out


def counts_from_logits(fp32: np.ndarray, int8: np.ndarray, labels: np.ndarray | None,
                       top_k: int = 5) -> EvalCounts:
    """The sums for a batch of logits [N, C] (pure numpy; ``labels`` None for unlabeled data)."""
    ref, got = fp32.astype(np.float64), int8.astype(np.float64)
    n, classes = ref.shape
    k = min(top_k, classes)
    c = EvalCounts(images=n, classes=classes, top_k=k)
    if n == 0:
        return c
    ref_top, got_top = ref.argmax(1), got.argmax(1)
    c.agree = int(np.sum(ref_top == got_top))
    diff = ref - got
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1)
    cos = np.sum(ref * got, axis=1) / np.maximum(norms, 1e-30)
    for i in range(n):  # per-image values, summed exactly: independent of how images are grouped
        c.cosine_sum += Fraction(float(cos[i]))
        c.abs_err_sum += Fraction(math.fsum(np.abs(diff[i]).tolist()))
        c.sq_err_sum += Fraction(math.fsum((diff[i] * diff[i]).tolist()))
    c.cosine_min = float(cos.min())
    c.max_abs_diff = float(np.abs(diff).max())
    c.max_abs_fp32 = float(np.abs(ref).max())
    if labels is not None:
        labels = np.asarray(labels)
        c.labeled = n
        ref_k, got_k = top_indices(ref, k), top_indices(got, k)
        ref_ok, got_ok = ref_top == labels, got_top == labels
        c.fp32_top1, c.int8_top1 = int(ref_ok.sum()), int(got_ok.sum())
        c.fp32_topk = int((ref_k == labels[:, None]).any(1).sum())
        c.int8_topk = int((got_k == labels[:, None]).any(1).sum())
        c.lost, c.gained = int(np.sum(ref_ok & ~got_ok)), int(np.sum(~ref_ok & got_ok))
    return c


def unmeasured_accuracy() -> dict[str, Any]:
    """accuracy()'s keys, all None: what validate records for a model whose outputs are not finite."""
    return {"top1": None, "topk": None}


def unmeasured_fidelity() -> dict[str, Any]:
    """compare_logits()'s keys, all None (same use)."""
    return {"agreement": None, "max_abs_logit_diff": None, "mean_abs_logit_diff": None, "rel_logit_error": None,
            "cosine": None, "cosine_min": None, "flips": {"lost": None, "gained": None}}


def non_finite_rows(logits: np.ndarray) -> int:
    """Images (rows) with a NaN or infinite logit."""
    return int(np.count_nonzero(~np.isfinite(logits).all(axis=tuple(range(1, logits.ndim)))))


def accuracy(logits: np.ndarray, labels: np.ndarray | None, k: int) -> dict[str, float | None]:
    if labels is None:
        return {"top1": None, "topk": None}
    top = top_indices(logits, k)
    return {"top1": float(np.mean(logits.argmax(1) == labels)), "topk": float(np.mean((top == labels[:, None]).any(1)))}


def compare_logits(ref: np.ndarray, got: np.ndarray, labels: np.ndarray | None) -> dict[str, Any]:
    """How far ``got`` (INT8) is from ``ref`` (FP32): argmax agreement, flips, logit error, cosine.
    (EvalCounts.summary gives the same figures from exact sums, for sharded evaluation.)"""
    ref64, got64 = ref.astype(np.float64), got.astype(np.float64)
    diff = np.abs(ref64 - got64)
    norms = np.linalg.norm(ref64, axis=1) * np.linalg.norm(got64, axis=1)
    cos = np.sum(ref64 * got64, axis=1) / np.maximum(norms, 1e-30)
    out: dict[str, Any] = {
        "agreement": float(np.mean(ref.argmax(1) == got.argmax(1))),
        "max_abs_logit_diff": float(diff.max()),
        "mean_abs_logit_diff": float(diff.mean()),
        "rel_logit_error": float(diff.max() / max(float(np.abs(ref64).max()), 1e-30)),
        "cosine": float(cos.mean()),
        "cosine_min": float(cos.min()),
        "flips": {"lost": None, "gained": None},
    }
    if labels is not None:
        ref_ok, got_ok = ref.argmax(1) == labels, got.argmax(1) == labels
        out["flips"] = {"lost": int(np.sum(ref_ok & ~got_ok)), "gained": int(np.sum(~ref_ok & got_ok))}
    return out


def agreement(out: np.ndarray | None, ref: np.ndarray | None, labels: np.ndarray | None) -> dict[str, Any]:
    """An engine's top-1 and its argmax agreement with a reference engine (bench)."""
    if out is None or ref is None or len(out) == 0:
        return {"top1": None, "agreement": None, "images": 0}
    pred = out.argmax(1)
    return {"top1": None if labels is None else float(np.mean(pred == labels)),
            "agreement": float(np.mean(pred == ref.argmax(1))), "images": int(len(out))}


def verdict_evidence(fp32: np.ndarray, int8: np.ndarray, labels: np.ndarray | None) -> dict[str, Any]:
    """The counts and per-image figures the verdict's intervals are computed from
    (lcpipe.measure.intervals): validation.json keeps them, so any confidence can be asked later."""
    ref, got = fp32.astype(np.float64), int8.astype(np.float64)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1)
    cos = np.sum(ref * got, axis=1) / np.maximum(norms, 1e-30)
    out: dict[str, Any] = {"images": int(len(ref)), "agree": int(np.sum(ref.argmax(1) == got.argmax(1))),
                           "fp32_correct": None, "int8_correct": None, "paired": None,
                           "cosines": [float(f"{c:.9g}") for c in cos]}
    if labels is not None:
        from lcpipe.measure.stats import paired_counts

        ref_ok, got_ok = ref.argmax(1) == labels, got.argmax(1) == labels
        pc = paired_counts(ref_ok, got_ok)
        out.update(fp32_correct=int(ref_ok.sum()), int8_correct=int(got_ok.sum()),
                   paired={"both": pc.both, "lost": pc.lost, "gained": pc.gained, "neither": pc.neither})
    return out
