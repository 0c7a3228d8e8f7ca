"""BatchNorm statistics of a Paddle dygraph network from one real-image batch.

A network with random weights and default BN statistics is input-insensitive (its argmax never
changes), which makes accuracy and agreement figures meaningless. Setting every BN layer's running
mean/variance to the statistics of a real batch, as a trained network's would be, keeps it
input-sensitive. Used by the benchmark matrix (benchmarks/) and the tests' reference models.
paddle is imported inside the function.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def set_bn_statistics(net: Any, batch: np.ndarray) -> None:
    """Running mean/variance of every ``paddle.nn.BatchNorm2D`` in ``net`` := those of ``batch`` (one
    train-mode forward with momentum 0, layer by layer as the batch flows); ``net`` ends in eval mode
    with its momenta restored."""
    import paddle

    bns = [m for m in net.sublayers() if isinstance(m, paddle.nn.BatchNorm2D)]
    momenta = [bn._momentum for bn in bns]
    for bn in bns:
        bn._momentum = 0.0
    net.train()
    with paddle.no_grad():
        net(paddle.to_tensor(batch))
    for bn, momentum in zip(bns, momenta, strict=True):
        bn._momentum = momentum
    net.eval()
