"""`lcpipe inspect` as text: one ``key: value`` line per fact, ports, labels and rt_info records
shortened to what a reader scans for (``--json`` has them whole)."""

from __future__ import annotations

import json
from typing import Any

SHOWN_LABELS = 5


def format_inspect(info: dict[str, Any]) -> str:
    lines = []
    for key, value in info.items():
        if value is None or key == "spec":  # spec: the fields above already say it
            continue
        lines.append(f"{key:>18}: {_cell(key, value)}")
    return "\n".join(lines)


def _cell(key: str, value: Any) -> str:
    if key in ("inputs", "outputs") and value and isinstance(value[0], dict):
        return "; ".join(" ".join(str(p[k]) for k in ("name", "shape", "element_type", "layout") if p.get(k))
                         for p in value)
    if key == "labels" and isinstance(value, list):
        more = f", ... ({len(value)} classes)" if len(value) > SHOWN_LABELS else ""
        return ", ".join(map(str, value[:SHOWN_LABELS])) + more
    if key == "int8_ops" and isinstance(value, dict):
        return (f"{value.get('quantized')}/{value.get('quantizable')} convs+matmuls INT8 "
                f"({value.get('fake_quantize')} FakeQuantize ops)")
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(", ", ": "))
    return str(value)
