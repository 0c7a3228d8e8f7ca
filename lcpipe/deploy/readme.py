"""The bundle's README.txt: what each file is, whether to serve it at all, and how (serve.py, OVMS)."""

from __future__ import annotations

from typing import Any

from lcpipe.render.format import fixed, pct

INDENT = " " * 23  # continuation lines of the file list


def deploy_readme(m: dict[str, Any], pre: dict[str, Any], labels: bool, *, resize_in_graph: bool = False,
                  resize_fidelity: dict[str, Any] | None = None, bundle: dict[str, Any] | None = None,
                  input_hw: tuple[int, int] | None = None) -> str:
    """``bundle``: metrics.json's ``bundle`` section (lcpipe.deploy.bundle.write_deploy); without it (a
    README rendered alone) the serving and batch lines are left out."""
    from lcpipe.deploy.servable import do_not_serve_line
    from lcpipe.render.shipped import model_label, shipped_headline, shipped_of, speedup_headline

    sp, s, label = m["speedup"], shipped_of(m), model_label(m)
    takes = ("at any size: resize, crop,\n" + INDENT + "colour, float conversion and mean/std run in the "
             "graph" + _resize_note(resize_fidelity) if resize_in_graph else
             "after resize/crop; colour, float conversion and\n" + INDENT + "mean/std run in the graph")
    stop = do_not_serve_line(bundle) if bundle else None
    head = f"{stop}\n(the run that wrote this bundle did not pass its gates: metrics.json bundle.reasons)\n" \
        if stop else ""
    serve_this = " (DO NOT SERVE: see the first line)" if stop else " (serve this)"
    return f"""{head}lcpipe deploy bundle: {m['pipeline']}
{shipped_headline(m)}: {speedup_headline(m)}

model_image.xml/.bin   the shipped model ({s['description']}) taking images{serve_this}:
{INDENT}uint8 NHWC BGR as cv2 decodes, {takes}{_batch_lines(bundle, input_hw)}
model.xml/.bin         the same model taking float32 NCHW RGB, normalized (preprocess.json)
reference_fp32_image.xml, reference_fp32.xml   the FP32 IR it was judged against, same inputs
plan.json            the shipped plan: name, float precision, compile properties, why it won
preprocess.json      resize/crop and normalization; "image_input_ir" describes the image-input IRs
labels.txt           class names, one per line
metrics.json         accuracy, fidelity, latency, gates measured on {m['cpu'].get('model')} ({m['cpu'].get('isa')})\
{_bundle_files(bundle)}
{label} top-1 {pct(m['accuracy']['int8']['top1'])} (FP32 {pct(m['accuracy']['fp32']['top1'])}); model-only \
latency {fixed(sp['latency_p50'], 2, 'x')} vs the FP32 IR at \
{(m.get('inference_precision') or {}).get('fp32') or 'f32'}{_e2e_line(sp)}.
{_plan_line(m)}
Quick check:  lcpipe predict model_image.xml image.jpg --top-k 5     (or: lcpipe predict . image.jpg)
{_serve_lines(m, bundle)}{_compile_note(m)}"""


def _batch_lines(bundle: dict[str, Any] | None, hw: tuple[int, int] | None) -> str:
    if bundle is None:
        return ""
    shape = f"{hw[0]}, {hw[1]}" if hw else "H, W"
    batch = bundle.get("static_batch")
    if batch is None:
        return f"\n{INDENT}takes any batch: input [?, {shape}, 3]"
    other = "model_image_dynamic.xml takes any batch" if bundle.get("dynamic_batch_ir") else \
        "for any batch, set the deploy option batch: dynamic (writes model_image_dynamic.xml)"
    return (f"\n{INDENT}static batch {batch}: input [{batch}, {shape}, 3]; any other batch size raises in\n"
            f"{INDENT}OpenVINO ({other})")


def _bundle_files(bundle: dict[str, Any] | None) -> str:
    if bundle is None:
        return ""
    lines = []
    if bundle.get("dynamic_batch_ir"):
        lines.append(f"{bundle['dynamic_batch_ir']}/.bin   the shipped image-input model taking any batch "
                     f"[?, ...]{_batching_note(bundle.get('batching'))}")
    ovms = bundle["ovms"]
    lines.append("serve.py             the serving snippet: python serve.py IMAGE... from any directory (below)")
    lines.append(f"ovms/                OpenVINO Model Server layout: {ovms['config']} serves <name>/1/model.xml:")
    lines += [f"{INDENT}{name}: {xml}" for name, xml in ovms["models"].items()]
    return "\n" + "\n".join(lines)


def _batching_note(b: dict[str, Any] | None) -> str:
    if not b:
        return ""
    lat, per_s = b["latency_ms"], b["images_per_s"]
    return (f":\n{INDENT}batch 1 p50 {lat['dynamic_b1']['p50']:.3f} ms vs {lat['static_b1']['p50']:.3f} ms static "
            f"({b['dynamic_vs_static_b1_latency']:.2f}x the time);\n{INDENT}batch {b['batch']}: "
            f"{per_s['dynamic_bN']:.0f} images/s vs {per_s['static_b1']:.0f} images/s with batch-1 calls "
            f"on the static IR\n{INDENT}({b['rounds']} interleaved rounds in the deploy stage: a rough figure; "
            "metrics.json bundle.batching)")


def _serve_lines(m: dict[str, Any], bundle: dict[str, Any] | None) -> str:
    from lcpipe.deploy.snippet import serving_compile_config

    config = serving_compile_config(m)
    if bundle is None:
        return f"Serve it: compile model_image.xml with {config!r}.\n"
    cache = bundle["model_cache"]
    first = next(iter(bundle["ovms"]["models"]))
    return f"""Serve it with Python (pip install openvino opencv-python-headless numpy; lcpipe not needed):

    python serve.py image.jpg [--top-k 5] [--cache-dir DIR | --no-cache]

  compiles model_image.xml with {config!r}
  plus CACHE_DIR={cache} (OpenVINO's model cache, next to this folder: the first start stores the
  compiled model, later starts import it), and prints top-k probabilities with labels as lcpipe
  predict does.

Serve it with OpenVINO Model Server (ovms/config.json follows OVMS's config schema; lcpipe's tests
check it against that schema but do not start OVMS):

    docker run --rm -p 9000:9000 -p 8000:8000 -v "$PWD/ovms:/models:ro" openvino/model_server:latest \\
        --config_path /models/config.json --port 9000 --rest_port 8000

  {first} takes uint8 NHWC BGR of the network's input size: decode and resize as serve.py does.
  plugin_config carries the compile properties above; OVMS takes its model cache as --cache_dir.
"""


def _resize_note(fidelity: dict[str, Any] | None) -> str:
    if fidelity is None:
        return " (not compared with cv2's resize: no eval data)"
    return (f"\n{INDENT}(vs cv2's resize on {fidelity['images']} eval images: top-1 agreement "
            f"{pct(fidelity['top1_agreement'])}, max abs logit diff {fidelity['max_abs_logit_diff']:.3g}; "
            "resize_in_graph.json)")


def _compile_note(m: dict[str, Any]) -> str:
    from lcpipe.deploy.snippet import measured_compile_config

    if measured_compile_config(m) is not None:
        return ("The compile properties above are those the metrics were measured with (threads: your host's; "
                "add INFERENCE_NUM_THREADS to pin them).\n")
    return ("The snippet compiles at the plugin's default float precision; validate did not record the one it "
            "measured at (metrics.json inference_precision), so latency and fidelity may differ.\n")


def _e2e_line(sp: dict[str, Any]) -> str:
    if not sp.get("e2e_latency_p50"):
        return ""
    return f"; end to end {fixed(sp['e2e_latency_p50'], 2, 'x')} vs the FP32 IR (f32) with Python float preprocessing"


def _plan_line(m: dict[str, Any]) -> str:
    if not m.get("plan"):
        return ""
    from lcpipe.render.plan import plan_headline

    return f"Precision plan (plan.json): {plan_headline(m['plan'])}\n"
