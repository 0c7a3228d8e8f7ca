"""The deploy bundle: what a serving host needs, with a README that holds a runnable serving snippet.

deploy/
  model_int8_image.xml/.bin, model_fp32_image.xml/.bin   the IRs taking images (uint8 BGR, lcpipe.deploy.image_input)
  model_int8.xml/.bin, model_fp32.xml/.bin   the IRs taking normalized float32 NCHW RGB
  labels.txt, preprocess.json                class names, input preprocessing (from the IR's rt_info)
  metrics.json, README.txt                   the measured figures, how to serve it
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from lcpipe.fileio import write_json
from lcpipe.render.format import pct, times


def write_deploy(dest: Path, fp32_xml: Path, int8_xml: Path, rt: dict[str, Any], metrics: dict[str, Any]) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    from lcpipe.deploy.image_input import image_input_preprocess, write_image_input_ir

    for tag, xml in (("int8", int8_xml), ("fp32", fp32_xml)):
        shutil.copyfile(xml, dest / f"model_{tag}.xml")
        shutil.copyfile(Path(xml).with_suffix(".bin"), dest / f"model_{tag}.bin")
        write_image_input_ir(Path(xml), dest / f"model_{tag}_image.xml")
    labels = rt.get("labels")
    if labels:
        (dest / "labels.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
    pre = rt.get("preprocess") or {}
    # the float IRs' input; the image-input IRs carry their own description (rt_info) and it is here too
    write_json(dest / "preprocess.json", {**pre, "image_input_ir": image_input_preprocess(pre)} if pre else pre)
    write_json(dest / "metrics.json", metrics)
    if metrics.get("plan"):  # the shipped plan and the compile properties it was measured with
        write_json(dest / "plan.json", metrics["plan"])
    (dest / "README.txt").write_text(deploy_readme(metrics, pre, bool(labels)), encoding="utf-8")
    return dest


def deploy_readme(m: dict[str, Any], pre: dict[str, Any], labels: bool) -> str:
    sp = m["speedup"]
    return f"""lcpipe deploy bundle: {m['pipeline']}

model_int8_image.xml/.bin  {_served_model(m)} taking images (serve this): uint8 NHWC BGR as cv2 decodes,
                           after resize/crop; colour, float conversion and mean/std run in the graph{_plan_holds(m)}
model_fp32_image.xml/.bin  FP32 reference, same input
model_int8.xml, model_fp32.xml  the same models taking float32 NCHW RGB, normalized (preprocess.json)
                           (the "int8" files hold the shipped model, whatever its precision)
preprocess.json      resize/crop and normalization; "image_input_ir" describes the image-input IRs
labels.txt           class names, one per line
metrics.json         accuracy, fidelity, latency, gates measured on {m['cpu'].get('model')} ({m['cpu'].get('isa')})
{_int8_label(m)} top-1 {pct(m['accuracy']['int8']['top1'])} (FP32 {pct(m['accuracy']['fp32']['top1'])}), \
latency speed-up {times(sp['latency_p50'])}{_e2e_line(sp)}.
{_plan_line(m)}

Quick check:  lcpipe predict model_int8_image.xml image.jpg --top-k 5
Serve it (pip install openvino opencv-python-headless numpy):

{serving_snippet(pre, labels, measured_compile_config(m))}
{_compile_note(m)}"""


def _served_model(m: dict[str, Any]) -> str:
    """What model_int8*.xml holds: the INT8 IR, or the plan the plan stage shipped (maybe not INT8)."""
    return "Shipped model" if m.get("plan") else "INT8 IR"


def _plan_holds(m: dict[str, Any]) -> str:
    plan = m.get("plan")
    if not plan:
        return ""
    if not plan["int8"]:
        what = "the FP32 IR - NOT INT8: no INT8 candidate won (plan.json)"
    else:
        what = plan["description"]
    return f"\n                           It holds plan {plan['chosen']}: {what}."


def _int8_label(m: dict[str, Any]) -> str:
    plan = m.get("plan")
    return f"Shipped plan ({plan['chosen']})" if plan else "INT8"


def measured_compile_config(m: dict[str, Any]) -> dict[str, Any] | None:
    """The compile properties the shipped model's figures were measured with: the plan's runtime_config,
    else the LATENCY hint with the float precision validate ran the INT8 IR at (the plugin's default
    differs by CPU: bf16 on AMX / avx512_bf16). None when that precision was not recorded."""
    from lcpipe.ir import ov_config

    plan = m.get("plan")
    if plan:
        return plan["runtime_config"]
    precision = (m.get("inference_precision") or {}).get("int8")
    if precision in (None, "unknown"):
        return None
    return ov_config("LATENCY", None, precision)


def _compile_note(m: dict[str, Any]) -> str:
    if measured_compile_config(m) is not None:
        return ("The compile properties above are those the metrics were measured with (threads: your host's; "
                "add INFERENCE_NUM_THREADS to pin them).\n")
    return ("The snippet compiles at the plugin's default float precision; validate did not record the one it "
            "measured at (metrics.json inference_precision), so latency and fidelity may differ.\n")


def _e2e_line(sp: dict[str, Any]) -> str:
    if not sp.get("e2e_latency_p50"):
        return ""
    return (f"; end to end (decoded image -> top-k) {times(sp['e2e_latency_p50'])} vs the FP32 IR "
            "with Python float preprocessing")


def _plan_line(m: dict[str, Any]) -> str:
    if not m.get("plan"):
        return ""
    from lcpipe.render.plan import plan_headline

    return f"Precision plan (plan.json): {plan_headline(m['plan'])}\n"


def serving_snippet(pre: dict[str, Any], labels: bool, compile_config: dict[str, str] | None = None) -> str:
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
    names = 'open("labels.txt", encoding="utf-8").read().splitlines()' if labels else "None"
    from lcpipe.ir import ov_config

    config = compile_config or ov_config("LATENCY", None, None)  # the plugin's default precision
    return f"""import sys, cv2, numpy as np, openvino as ov
labels = {names}
model = ov.Core().compile_model("model_int8_image.xml", "CPU", {config!r})
img = cv2.imread(sys.argv[1])  # BGR uint8 HWC: the IR converts colour and normalizes itself
{resize}
logits = model(np.ascontiguousarray(img[None]))[0][0]
for i in np.argsort(-logits)[:5]:
    print(i, labels[i] if labels else "", float(logits[i]))"""
