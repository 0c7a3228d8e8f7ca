"""The deploy bundle: what a serving host needs, with a README that holds a runnable serving snippet.

deploy/
  model_image.xml/.bin       the shipped model (the plan's choice, INT8 or not) taking images: uint8 BGR
                             (lcpipe.deploy.image_input); serve this
  model.xml/.bin             the same model taking normalized float32 NCHW RGB
  reference_fp32_image.xml/.bin, reference_fp32.xml/.bin   the FP32 IR it was judged against, same inputs
  plan.json                  the shipped plan: name, float precision, compile properties, why (every
                             candidate when a plan stage chose it)
  labels.txt, preprocess.json                class names, input preprocessing (from the IR's rt_info)
  metrics.json, README.txt                   the measured figures, how to serve it

Bundles written before the files were named for what they are hold model_int8*.xml (the shipped model)
and model_fp32*.xml (the reference); ``bundle_model`` and ``lcpipe predict`` read both layouts.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from lcpipe.fileio import write_json
from lcpipe.render.format import fixed, pct

# file stem -> which IR: the shipped one or the FP32 reference (each also as <stem>_image: images in)
BUNDLE_IRS = {"model": "shipped", "reference_fp32": "fp32"}
SERVED = "model_image.xml"
# what to serve from a bundle folder, newest layout first (older bundles: model_int8*.xml)
SERVED_CANDIDATES = (SERVED, "model.xml", "model_int8_image.xml", "model_int8.xml")


def write_deploy(dest: Path, fp32_xml: Path, shipped_xml: Path, rt: dict[str, Any], metrics: dict[str, Any], *,
                 resize_in_graph: bool = False, resize_fidelity: dict[str, Any] | None = None) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    from lcpipe.deploy.image_input import image_input_preprocess, write_image_input_ir

    sources = {"shipped": shipped_xml, "fp32": fp32_xml}
    for stem, which in BUNDLE_IRS.items():
        xml = Path(sources[which])
        shutil.copyfile(xml, dest / f"{stem}.xml")
        shutil.copyfile(xml.with_suffix(".bin"), dest / f"{stem}.bin")
        write_image_input_ir(xml, dest / f"{stem}_image.xml", resize_in_graph=resize_in_graph)
    labels = rt.get("labels")
    if labels:
        (dest / "labels.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
    pre = rt.get("preprocess") or {}
    # the float IRs' input; the image-input IRs carry their own description (rt_info) and it is here too
    image_pre = image_input_preprocess(pre, resize_in_graph) if pre else None
    write_json(dest / "preprocess.json", {**pre, "image_input_ir": image_pre} if pre else pre)
    write_json(dest / "metrics.json", metrics)
    write_json(dest / "plan.json", bundle_plan(metrics))
    if resize_fidelity is not None:
        write_json(dest / "resize_in_graph.json", resize_fidelity)
    readme = deploy_readme(metrics, pre, bool(labels), resize_in_graph=resize_in_graph, resize_fidelity=resize_fidelity)
    (dest / "README.txt").write_text(readme, encoding="utf-8")
    return dest


def bundle_model(folder: Path) -> Path:
    """The model to serve from a bundle folder, new layout (model_image.xml) or old (model_int8_image.xml)."""
    from lcpipe.errors import InputError

    for name in SERVED_CANDIDATES:
        if (folder / name).is_file():
            return folder / name
    raise InputError(f"{folder}: not a deploy bundle (none of {', '.join(SERVED_CANDIDATES)} in it)")


def bundle_plan(m: dict[str, Any]) -> dict[str, Any]:
    """plan.json: the plan stage's record (metrics.json ``plan``), or, without a plan stage, the same keys
    for the quantize stage's INT8 IR at the precision validate measured it with."""
    if m.get("plan"):
        return m["plan"]
    from lcpipe.render.shipped import shipped_of

    s = shipped_of(m)
    return {"chosen": s["plan"], "int8": s["int8"], "description": s["description"],
            "inference_precision": s["precision"], "runtime_config": s["runtime_config"],
            "why": "no plan stage: the quantize stage's INT8 IR, compiled as validate measured it", "candidates": []}


def deploy_readme(m: dict[str, Any], pre: dict[str, Any], labels: bool, *, resize_in_graph: bool = False,
                  resize_fidelity: dict[str, Any] | None = None) -> str:
    from lcpipe.render.shipped import model_label, shipped_headline, shipped_of, speedup_headline

    sp, s, label = m["speedup"], shipped_of(m), model_label(m)
    takes = ("at any size: resize, crop,\n                       colour, float conversion and mean/std run in the "
             "graph" + _resize_note(resize_fidelity) if resize_in_graph else
             "after resize/crop; colour, float conversion and\n                       mean/std run in the graph")
    return f"""lcpipe deploy bundle: {m['pipeline']}
{shipped_headline(m)}: {speedup_headline(m)}

model_image.xml/.bin   the shipped model ({s['description']}) taking images (serve this):
                       uint8 NHWC BGR as cv2 decodes, {takes}
model.xml/.bin         the same model taking float32 NCHW RGB, normalized (preprocess.json)
reference_fp32_image.xml, reference_fp32.xml   the FP32 IR it was judged against, same inputs
plan.json            the shipped plan: name, float precision, compile properties, why it won
preprocess.json      resize/crop and normalization; "image_input_ir" describes the image-input IRs
labels.txt           class names, one per line
metrics.json         accuracy, fidelity, latency, gates measured on {m['cpu'].get('model')} ({m['cpu'].get('isa')})
{label} top-1 {pct(m['accuracy']['int8']['top1'])} (FP32 {pct(m['accuracy']['fp32']['top1'])}); model-only \
latency {fixed(sp['latency_p50'], 2, 'x')} vs the FP32 IR at \
{(m.get('inference_precision') or {}).get('fp32') or 'f32'}{_e2e_line(sp)}.
{_plan_line(m)}
Quick check:  lcpipe predict model_image.xml image.jpg --top-k 5     (or: lcpipe predict . image.jpg)
Serve it (pip install openvino opencv-python-headless numpy):

{serving_snippet(pre, labels, measured_compile_config(m), resize_in_graph=resize_in_graph)}
{_compile_note(m)}"""


def _resize_note(fidelity: dict[str, Any] | None) -> str:
    if fidelity is None:
        return " (not compared with cv2's resize: no eval data)"
    return (f"\n                       (vs cv2's resize on {fidelity['images']} eval images: top-1 agreement "
            f"{pct(fidelity['top1_agreement'])}, max abs logit diff {fidelity['max_abs_logit_diff']:.3g}; "
            "resize_in_graph.json)")


def measured_compile_config(m: dict[str, Any]) -> dict[str, Any] | None:
    """The compile properties the shipped model's figures were measured with: the plan's runtime_config,
    else the LATENCY hint with the float precision validate ran the INT8 IR at (the plugin's default
    differs by CPU: bf16 on AMX / avx512_bf16). None when that precision was not recorded."""
    from lcpipe.render.shipped import shipped_of

    return shipped_of(m).get("runtime_config")


def _compile_note(m: dict[str, Any]) -> str:
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


def serving_snippet(pre: dict[str, Any], labels: bool, compile_config: dict[str, str] | None = None, *,
                    resize_in_graph: bool = False) -> str:
    interp = "cv2.INTER_CUBIC" if pre.get("interpolation") == "bicubic" else "cv2.INTER_LINEAR"
    mode, short, c = pre.get("mode"), pre.get("resize_short", 256), pre.get("crop", 224)
    if mode == "resize":
        h, w = pre.get("size") or pre.get("input_hw") or [224, 224]
        resize = f"img = cv2.resize(img, ({w}, {h}), interpolation={interp})"
    elif mode == "timm":  # torchvision Resize(int): short side exact, long side truncated; round() crop offset
        resize = (f"h, w = img.shape[:2]; s = {short}; size = (s, int(s * h / w)) if w <= h else (int(s * w / h), s)\n"
                  f"img = cv2.resize(img, size, interpolation={interp})\n"
                  f"c = {c}; h, w = img.shape[:2]; t, l = round((h - c) / 2), round((w - c) / 2)\n"
                  "img = img[t:t + c, l:l + c]")
    else:  # PaddleClas ResizeImage(resize_short) + CropImage
        resize = (f"s = {short} / min(img.shape[:2]); img = cv2.resize(img, (round(img.shape[1] * s), "
                  f"round(img.shape[0] * s)), interpolation={interp})\n"
                  f"c = {c}; h, w = img.shape[:2]; t, l = (h - c) // 2, (w - c) // 2; img = img[t:t + c, l:l + c]")
    if resize_in_graph:
        resize = "# resize + crop run in the graph: any image size"
    names = 'open("labels.txt", encoding="utf-8").read().splitlines()' if labels else "None"
    from lcpipe.ir import ov_config

    config = compile_config or ov_config("LATENCY", None, None)  # the plugin's default precision
    return f"""import sys, cv2, numpy as np, openvino as ov
labels = {names}
model = ov.Core().compile_model("model_image.xml", "CPU", {config!r})
img = cv2.imread(sys.argv[1])  # BGR uint8 HWC: the IR converts colour and normalizes itself
{resize}
logits = model(np.ascontiguousarray(img[None]))[0][0]
for i in np.argsort(-logits)[:5]:
    print(i, labels[i] if labels else "", float(logits[i]))"""
