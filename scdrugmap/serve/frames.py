"""Responses shared by the routes: DataFrames as JSON records (NaN as null, times as ISO
text), and figure files as PNG or SVG."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import pandas as pd
from fastapi.responses import FileResponse

FigureFormat = Literal["png", "svg"]
_FIGURE_TYPES = {"png": "image/png", "svg": "image/svg+xml"}


def records(frame: pd.DataFrame) -> list[dict]:
    """Plain JSON-ready rows; JSON text held in a column (provenance, say) stays text."""
    if frame.empty:
        return []
    return json.loads(frame.to_json(orient="records", date_format="iso", default_handler=str))


def figure_response(path: Path, fmt: FigureFormat) -> FileResponse:
    return FileResponse(path, media_type=_FIGURE_TYPES[fmt])
