"""The deploy bundle: what a serving host needs, with a README that holds a runnable serving snippet.

deploy/
  model_int8.xml/.bin, model_fp32.xml/.bin   the IRs
  labels.txt, preprocess.json                class names, input preprocessing (from the IR's rt_info)
  metrics.json, README.txt                   the measured figures, how to serve it
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from lcpipe.fileio import write_json
from lcpipe.render.format import num, pct


def write_deploy(dest: Path, fp32_xml: Path, int8_xml: Path, rt: dict[str, Any], metrics: dict[str, Any]) -> Path:
    dest.mkdir(parents=True)
    for tag, xml in (("int8", int8_xml), ("fp32", fp32_xml)):
        shutil.copyfile(xml, dest / f"model_{tag}.xml")
        shutil.copyfile(Path(xml).with_suffix(".bin"), dest / f"model_{tag}.bin")
    labels = rt.get("labels")
    if labels:
        (dest / "labels.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
    pre = rt.get("preprocess") or {}
    write_json(dest / "preprocess.json", pre)
    write_json(dest / "metrics.json", metrics)
    if metrics.get("plan"):  # the shipped plan and the compile properties it was measured with
        write_json(dest / "plan.json", metrics["plan"])
    (dest / "README.txt").write_text(deploy_readme(metrics, pre, bool(labels)), encoding="utf-8")
    return dest


def deploy_readme(m: dict[str, Any], pre: dict[str, Any], labels: bool) -> str:
    sp = m["speedup"]
    return f"""lcpipe deploy bundle: {m['pipeline']}

model_int8.xml/.bin  INT8 OpenVINO IR (serve this)     model_fp32.xml/.bin  FP32 reference
preprocess.json      input preprocessing (RGB, NCHW float32)  labels.txt  class names, one per line
metrics.json         accuracy, fidelity, latency, gates measured on {m['cpu'].get('model')} ({m['cpu'].get('isa')})
INT8 top-1 {pct(m['accuracy']['int8']['top1'])} (FP32 {pct(m['accuracy']['fp32']['top1'])}), \
latency speed-up {num(sp['latency_p50'])}x.
{_plan_line(m)}

Quick check:  lcpipe predict model_int8.xml image.jpg --top-k 5
Serve it (pip install openvino opencv-python-headless numpy):

{serving_snippet(pre, labels, (m.get("plan") or {}).get("runtime_config"))}
"""


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
    return f"""import json, sys, cv2, numpy as np, openvino as ov
pre = json.load(open("preprocess.json")); labels = {names}
model = ov.Core().compile_model("model_int8.xml", "CPU", {compile_config or {"PERFORMANCE_HINT": "LATENCY"}!r})
img = cv2.cvtColor(cv2.imread(sys.argv[1]), cv2.COLOR_BGR2RGB)
{resize}
x = ((img.astype(np.float32) / 255 - pre["mean"]) / pre["std"]).astype(np.float32).transpose(2, 0, 1)[None]
logits = model(x)[0][0]
for i in np.argsort(-logits)[:5]:
    print(i, labels[i] if labels else "", float(logits[i]))"""
