"""The deploy bundle: what a serving host needs, with a README and a runnable serving script.

deploy/
  model_image.xml/.bin       the shipped model (the plan's choice, INT8 or not) taking images: uint8 BGR
                             (lcpipe.deploy.image_input), static batch (1 unless convert made it dynamic);
                             serve this
  model_image_dynamic.xml/.bin   with ``batch: dynamic``: the same IR taking any batch
  model.xml/.bin             the same model taking normalized float32 NCHW RGB
  reference_fp32_image.xml/.bin, reference_fp32.xml/.bin   the FP32 IR it was judged against, same inputs
  plan.json                  the shipped plan: name, float precision, compile properties, why (every
                             candidate when a plan stage chose it)
  labels.txt, preprocess.json                class names, input preprocessing (from the IR's rt_info)
  serve.py                   the serving snippet (lcpipe.deploy.snippet): runs from any directory
  ovms/                      OpenVINO Model Server layout + config.json (lcpipe.deploy.ovms)
  metrics.json               the run's figures, plus ``bundle``: servable or not and why
                             (lcpipe.deploy.servable), batch sizes, dynamic-batch timing, OVMS models
  README.txt                 how to serve it (lcpipe.deploy.readme); "DO NOT SERVE" first when a gate
                             did not pass

Bundles written before the files were named for what they are hold model_int8*.xml (the shipped model)
and model_fp32*.xml (the reference); ``bundle_model`` and ``lcpipe predict`` read both layouts.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from lcpipe.fileio import write_json

# file stem -> which IR: the shipped one or the FP32 reference (each also as <stem>_image: images in)
BUNDLE_IRS = {"model": "shipped", "reference_fp32": "fp32"}
SERVED = "model_image.xml"
DYNAMIC = "model_image_dynamic.xml"  # deploy option batch: dynamic
# what to serve from a bundle folder, newest layout first (older bundles: model_int8*.xml)
SERVED_CANDIDATES = (SERVED, "model.xml", "model_int8_image.xml", "model_int8.xml")


def write_bundle_irs(dest: Path, fp32_xml: Path, shipped_xml: Path, *, resize_in_graph: bool = False,
                     dynamic_batch: bool = False) -> dict[str, Any]:
    """The bundle's IRs; returns ``{static_batch, input_hw, dynamic}``: model_image.xml's batch (None:
    it already takes any), its input height and width (None: any size, resize in the graph) and the
    dynamic-batch IR (None unless asked for and model_image.xml is static)."""
    from lcpipe.deploy.image_input import write_image_input_ir
    from lcpipe.ir import input_batch, read_ir, save_ir, with_dynamic_batch

    dest.mkdir(parents=True, exist_ok=True)
    sources = {"shipped": shipped_xml, "fp32": fp32_xml}
    for stem, which in BUNDLE_IRS.items():
        xml = Path(sources[which])
        shutil.copyfile(xml, dest / f"{stem}.xml")
        shutil.copyfile(xml.with_suffix(".bin"), dest / f"{stem}.bin")
        write_image_input_ir(xml, dest / f"{stem}_image.xml", resize_in_graph=resize_in_graph)
    served = read_ir(dest / SERVED)
    batch, shape = input_batch(served), served.inputs[0].get_partial_shape()
    hw = None if shape[1].is_dynamic or shape[2].is_dynamic else (shape[1].get_length(), shape[2].get_length())
    dynamic = save_ir(with_dynamic_batch(served), dest / DYNAMIC) if dynamic_batch and batch is not None else None
    return {"static_batch": batch, "input_hw": hw, "dynamic": dynamic}


def write_deploy(dest: Path, rt: dict[str, Any], metrics: dict[str, Any], irs: dict[str, Any], *,
                 resize_in_graph: bool = False, resize_fidelity: dict[str, Any] | None = None,
                 batching: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything but the IRs (write_bundle_irs wrote them into ``dest``); returns the ``bundle`` section
    of the bundle's metrics.json."""
    from lcpipe.deploy.image_input import image_input_preprocess
    from lcpipe.deploy.ovms import OVMS_DIR, write_ovms
    from lcpipe.deploy.readme import deploy_readme
    from lcpipe.deploy.servable import do_not_serve_line, servability
    from lcpipe.deploy.snippet import CACHE_FOLDER, SCRIPT, serve_script, serving_compile_config

    labels = rt.get("labels")
    if labels:
        (dest / "labels.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
    pre = rt.get("preprocess") or {}
    # the float IRs' input; the image-input IRs carry their own description (rt_info) and it is here too
    image_pre = image_input_preprocess(pre, resize_in_graph) if pre else None
    write_json(dest / "preprocess.json", {**pre, "image_input_ir": image_pre} if pre else pre)
    write_json(dest / "plan.json", bundle_plan(metrics))
    if resize_fidelity is not None:
        write_json(dest / "resize_in_graph.json", resize_fidelity)
    compile_config = serving_compile_config(metrics)
    ovms = write_ovms(dest, metrics["pipeline"], compile_config)
    bundle = {**servability(metrics), "static_batch": irs["static_batch"],
              "dynamic_batch_ir": DYNAMIC if irs.get("dynamic") else None, "batching": batching,
              "serve": SCRIPT, "compile_config": compile_config, "model_cache": f"../{CACHE_FOLDER}",
              "ovms": {"config": f"{OVMS_DIR}/config.json", "models": ovms["models"]}}
    (dest / SCRIPT).write_text(serve_script(pre, compile_config, pipeline=metrics["pipeline"], served=SERVED,
                                            resize_in_graph=resize_in_graph, do_not_serve=do_not_serve_line(bundle)),
                               encoding="utf-8")
    write_json(dest / "metrics.json", {**metrics, "bundle": bundle})
    readme = deploy_readme(metrics, pre, bool(labels), resize_in_graph=resize_in_graph,
                           resize_fidelity=resize_fidelity, bundle=bundle, input_hw=irs.get("input_hw"))
    (dest / "README.txt").write_text(readme, encoding="utf-8")
    return bundle


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
