"""OpenVINO Model Server (OVMS) layout inside the bundle: a model repository per served IR and the
config.json that serves them.

ovms/
  config.json                    model_config_list: name, base_path (relative to config.json, as OVMS
                                 documents), target_device CPU, plugin_config = the plan's compile
                                 properties (the ones the bundle's figures were measured with)
  <name>/1/model.xml|bin         the shipped image-input IR (uint8 NHWC BGR): what to serve
  <name>_float/1/model.xml|bin   the same model taking normalized float32 NCHW RGB
  <name>_dynamic/1/model.xml|bin with ``deploy: {batch: dynamic}``: the image-input IR taking any batch

The IR files are hard links to the bundle's own where the file system allows (a copy otherwise): the
layout costs no disk. config.json follows the schema OVMS checks it against (``MODELS_CONFIG_SCHEMA``
in model_server's src/schema.cpp; tests/test_deploy_bundle.py validates it with that schema's copy).
OVMS itself is not started by lcpipe or its tests.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

from lcpipe.fileio import write_json

OVMS_DIR = "ovms"
VERSION = "1"  # OVMS serves the highest numbered version folder under a model's base_path
# bundle IR (stem) -> the OVMS model name's suffix
SERVED_MODELS = {"model_image": "", "model": "_float", "model_image_dynamic": "_dynamic"}


def ovms_model_name(pipeline: str) -> str:
    """A model name OVMS exposes over its APIs and a folder name: the pipeline's name, other characters
    as "_"."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", pipeline).strip("._-") or "model"


def plugin_config(runtime_config: dict[str, Any] | None) -> dict[str, Any]:
    """The compile properties OVMS passes to the CPU plugin; its schema takes string, boolean and number
    values (CACHE_DIR is left out: OVMS takes --cache_dir on its command line)."""
    return {k: v for k, v in (runtime_config or {}).items()
            if k != "CACHE_DIR" and isinstance(v, str | bool | int | float)}


def ovms_config(names: list[str], plugin: dict[str, Any]) -> dict[str, Any]:
    entries = []
    for name in names:
        config: dict[str, Any] = {"name": name, "base_path": name, "target_device": "CPU"}
        if plugin:
            config["plugin_config"] = plugin
        entries.append({"config": config})
    return {"model_config_list": entries}


def write_ovms(bundle: Path, pipeline: str, runtime_config: dict[str, Any] | None) -> dict[str, Any]:
    """ovms/ beside the bundle's IRs (those of SERVED_MODELS present); returns ``{models, config}``:
    OVMS model name -> the bundle IR it serves, and the config.json written."""
    root, base = bundle / OVMS_DIR, ovms_model_name(pipeline)
    served = {base + suffix: f"{stem}.xml" for stem, suffix in SERVED_MODELS.items()
              if (bundle / f"{stem}.xml").is_file()}
    for name, xml in served.items():
        version = root / name / VERSION
        version.mkdir(parents=True, exist_ok=True)
        for suffix in (".xml", ".bin"):
            _link_or_copy((bundle / xml).with_suffix(suffix), version / f"model{suffix}")
    config = ovms_config(list(served), plugin_config(runtime_config))
    write_json(root / "config.json", config)
    return {"models": served, "config": config}


def _link_or_copy(src: Path, dst: Path) -> None:
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed: a copy
        shutil.copyfile(src, dst)
