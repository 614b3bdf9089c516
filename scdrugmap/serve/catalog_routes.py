"""The API's read side: what the store holds, its results, predictors and read-only SQL."""

from __future__ import annotations

import json
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from scdrugmap.serve.frames import FigureFormat, figure_response, records
from scdrugmap.serve.predictor_figures import PREDICTOR_FIGURES, figure_list, predictor_figure
from scdrugmap.store.sql import SqlLimits
from scdrugmap.store.storage import check_key
from scdrugmap.workflows.catalog import shared_cells_by_dataset
from scdrugmap.workflows.predict import read_predictor_record

router = APIRouter(prefix="/api", tags=["store"])

PredictorFigure = Literal[tuple(PREDICTOR_FIGURES)]


class SqlRequest(BaseModel):
    query: str = Field(description="One SELECT statement over the catalog's tables and views.")
    limit: int | None = Field(
        default=None, ge=1, description="Most rows to return (capped by the server's limit)."
    )


def _store(request: Request):
    return request.app.state.store


@router.get("/datasets", summary="Data sets in the store, with their counts and metadata")
def datasets(request: Request) -> list[dict]:
    """Each row also lists `shared_cells`: the other data sets holding identical cells
    ({dataset_id, n_shared, n_conflicting}; conflicting = with the opposite label)."""
    store = _store(request)
    rows = records(store.datasets())
    shared = shared_cells_by_dataset(store.path) if rows else {}
    for row in rows:
        row["shared_cells"] = shared.get(row["dataset_id"], [])
    return rows


@router.get("/embeddings", summary="Stored embeddings per data set, with provenance")
def embeddings(request: Request) -> list[dict]:
    return records(_store(request).embeddings())


@router.get("/predictors", summary="Predictors kept by `scdrugmap train`")
def predictors(request: Request) -> list[dict]:
    store = _store(request)
    if not store.exists():
        return []
    rows = records(store.query("SELECT * FROM predictors ORDER BY name"))
    for row in rows:
        row["cross_validated"] = json.loads(row["cross_validated"] or "null")
    return rows


@router.get("/predictors/{name}", summary="A predictor's full record and its figures")
def predictor(request: Request, name: str) -> dict:
    store = _store(request)
    record = read_predictor_record(store, check_key(name, "predictor name"))
    return {**record, "figures": figure_list(record)}


@router.get(
    "/predictors/{name}/figures/{figure}.{fmt}",
    summary="A benchmark figure of a predictor's cross-validated run, as PNG or SVG",
    response_class=FileResponse,
)
def predictor_figure_file(
    request: Request, name: str, figure: PredictorFigure, fmt: FigureFormat
) -> FileResponse:
    store = _store(request)
    path = predictor_figure(
        store, check_key(name, "predictor name"), figure, fmt, request.app.state.figure_cache
    )
    return figure_response(path, fmt)


@router.get("/runs", summary="Evaluation and fine-tuning runs")
def runs(request: Request) -> list[dict]:
    return records(_store(request).runs())


@router.get("/results", summary="Per-fold metrics with each run's embedding, classifier, split")
def results(request: Request, every_run: bool = False) -> list[dict]:
    """The newest run of each configuration, or every run with `every_run=true`."""
    return records(_store(request).results(latest=not every_run))


@router.post("/sql", summary="A read-only SQL query, with a row limit and a time limit")
def sql(request: Request, body: SqlRequest) -> dict:
    """Anything but one SELECT (or EXPLAIN) is refused; files cannot be read or written."""
    store = _store(request)
    settings = request.app.state.settings
    limit = min(body.limit or settings.sql_max_rows, settings.sql_max_rows)
    limits = SqlLimits(
        seconds=settings.sql_seconds,
        memory_mb=settings.sql_memory_mb,
        max_bytes=settings.sql_max_bytes,
    )
    frame = store.sql(body.query, limit + 1, limits=limits)
    truncated = len(frame) > limit
    frame = frame.iloc[:limit]
    return {
        "columns": [str(c) for c in frame.columns],
        "rows": records(frame),
        "n_rows": len(frame),
        "truncated": truncated,
        "limit": limit,
    }
