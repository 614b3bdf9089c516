"""DataFrames as HTTP responses: JSON records (NaN as null, times as ISO text) or CSV."""

from __future__ import annotations

import json

import pandas as pd
from fastapi.responses import Response


def records(frame: pd.DataFrame) -> list[dict]:
    """Plain JSON-ready rows; JSON text held in a column (provenance, say) stays text."""
    if frame.empty:
        return []
    return json.loads(frame.to_json(orient="records", date_format="iso", default_handler=str))


def csv_response(frame: pd.DataFrame, filename: str) -> Response:
    return Response(
        frame.to_csv(index=False),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
