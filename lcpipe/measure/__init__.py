"""Measurement: interleaved latency rounds, throughput, engine adapters (OpenVINO, ONNX Runtime, Paddle),
profiling, accuracy/fidelity counting and exact shard merging. validate, bench, sweep and sensitivity call it."""
