"""Reading the JSON manifests of the flow's folders (compiled model, build-hw output, bundle) with one-line errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shiftpu.errors import ShiftpuError


def read_json_object(path: Path, missing: str, error: type[ShiftpuError]) -> dict[str, Any]:
    """The JSON object in ``path``; raises ``error(missing)`` if the file is absent, and names the file otherwise."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise error(missing) from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{path}: cannot read: {e}") from None
    if not isinstance(data, dict):
        raise error(f"{path}: must hold a JSON object")
    return data
