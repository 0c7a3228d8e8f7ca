"""PP-LCNet V1/V2 architectures as data tables and the canonical in-memory form (spec + named tensors)."""
