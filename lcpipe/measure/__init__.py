"""Measurement: interleaved latency rounds, throughput, engine adapters (OpenVINO, ONNX Runtime, Paddle),
profiling, accuracy/fidelity counting and exact shard merging. validate, bench, sweep and sensitivity call it.

runtime   running IRs and ONNX models (infer_ov, ort_session, ir_size; compile properties: lcpipe.ir)
timing    interleaved batch-1 latency rounds, async-pool throughput (no Python completion callbacks)
engines   peer engines (OpenVINO, ONNX Runtime FP32/INT8, Paddle oneDNN) measured side by side
accuracy  top-1/top-k, INT8-vs-FP32 fidelity, EvalCounts (sums that merge exactly)
shards    FP32 vs INT8 evaluation in slices, locally or as Ray tasks
profile   OpenVINO per-layer counters
routes    Paddle Inference and paddle2onnx routes vs lcpipe's FP32 IR
candidates  precision-plan candidates (lcpipe.plan): compile, time together, judge against the gates
stats     intervals (proportions, paired top-1 drop, speed-ups from rounds), exact McNemar, 3-valued verdicts
stopping  adaptive rounds: when validate may stop timing (pure rule)
"""
