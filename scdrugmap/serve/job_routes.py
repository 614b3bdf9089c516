"""The API's prediction side: upload a file to start a job, watch it, read its results."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import FileResponse

from scdrugmap.predict.train import read_predictor_record
from scdrugmap.serve.frames import FigureFormat, figure_response, records
from scdrugmap.serve.job_outputs import FIGURES, JobOutputs
from scdrugmap.serve.jobs import JOB_ID, Job, JobQueue
from scdrugmap.serve.uploads import receive, safe_filename
from scdrugmap.store.store import check_key

router = APIRouter(prefix="/api", tags=["prediction jobs"])

JobId = Annotated[str, Path(pattern=JOB_ID.pattern, description="The job's id.")]
JobFigure = Literal[tuple(FIGURES)]
MAX_CELLS_PER_PAGE = 100_000
_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "description": "The file itself (h5ad, 10x Cell Ranger .h5, or a .tsv/.txt/.csv table, "
        "optionally .gz), sent as the raw body.",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


def _jobs(request: Request) -> JobQueue:
    return request.app.state.jobs


def _job(request: Request, job_id: str) -> Job:
    job = _jobs(request).get(job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id!r} on this server")
    return job


def _finished(request: Request, job_id: str) -> JobOutputs:
    job = _job(request, job_id)
    if job.state == "failed":
        raise HTTPException(409, f"job {job_id} failed: {job.error}")
    if job.outputs is None:
        raise HTTPException(409, f"job {job_id} is {job.state} ({job.stage}); wait until done")
    return job.outputs


@router.post(
    "/jobs",
    status_code=202,
    summary="Upload cells and start predicting their response",
    openapi_extra=_UPLOAD_BODY,
)
async def start_job(
    request: Request,
    predictor: Annotated[str, Query(description="A predictor kept by `scdrugmap train`.")],
    filename: Annotated[str, Query(description="The file's name; its suffix gives the format.")],
    sample: Annotated[str | None, Query(description="Sample name of all cells.")] = None,
    sample_column: Annotated[
        str | None, Query(description="Per-cell column naming each cell's sample.")
    ] = None,
) -> dict:
    """The file is checked as `scdrugmap ingest` checks it; a bad file fails the job
    with the same message and leaves the store unchanged."""
    queue = _jobs(request)
    read_predictor_record(queue.store, check_key(predictor, "predictor name"))
    job = queue.new_job(predictor, safe_filename(filename), sample, sample_column)
    try:
        await receive(request, queue.upload_path(job), request.app.state.settings.max_upload_bytes)
    except BaseException:
        queue.discard(job)
        raise
    queue.start(job)
    return job.public()


@router.get("/jobs", summary="This server's jobs, newest first")
def list_jobs(request: Request) -> list[dict]:
    return [job.public() for job in _jobs(request).all()]


@router.get("/jobs/{job_id}", summary="A job's state and progress")
def job_status(request: Request, job_id: JobId) -> dict:
    return _job(request, job_id).public()


@router.get("/jobs/{job_id}/cells.json", summary="Per-cell calls, a page at a time")
def cells_json(
    request: Request,
    job_id: JobId,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_CELLS_PER_PAGE)] = 10_000,
) -> dict:
    """Barcode, sample, probability of sensitivity, call and map coordinates per cell."""
    cells = _finished(request, job_id).cells
    return {
        "total": len(cells),
        "offset": offset,
        "cells": records(cells.iloc[offset : offset + limit]),
    }


@router.get("/jobs/{job_id}/cells.csv", summary="Per-cell calls as CSV")
def cells_csv(request: Request, job_id: JobId) -> FileResponse:
    outputs = _finished(request, job_id)
    return FileResponse(
        outputs.table_path("cells"), media_type="text/csv", filename=f"{job_id}-cells.csv"
    )


@router.get("/jobs/{job_id}/samples.json", summary="Per-sample summaries")
def samples_json(request: Request, job_id: JobId) -> list[dict]:
    return records(_finished(request, job_id).samples)


@router.get("/jobs/{job_id}/samples.csv", summary="Per-sample summaries as CSV")
def samples_csv(request: Request, job_id: JobId) -> FileResponse:
    outputs = _finished(request, job_id)
    return FileResponse(
        outputs.table_path("samples"), media_type="text/csv", filename=f"{job_id}-samples.csv"
    )


@router.get(
    "/jobs/{job_id}/figures/{figure}.{fmt}",
    summary="The job's map or histograms, as PNG or SVG",
    response_class=FileResponse,
)
def job_figure(request: Request, job_id: JobId, figure: JobFigure, fmt: FigureFormat):
    path = _finished(request, job_id).figure_path(figure, fmt)
    return figure_response(path, fmt)
