"""The API's prediction side: upload a file to start a job, watch it, read its results.

A job's file comes either as the body of `POST /api/jobs` itself, or first to
`POST /api/uploads`, which answers with the file's per-cell columns (so a
person can say which one names the samples) and an id for `POST /api/jobs`.
"""

from __future__ import annotations

from pathlib import Path as FilePath
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from scdrugmap.data.obs_columns import CellColumns, read_cell_columns
from scdrugmap.data.source import limited_reading
from scdrugmap.errors import InputError, ScdrugmapError
from scdrugmap.serve.frames import FigureFormat, figure_response, records
from scdrugmap.serve.job_outputs import FIGURES, JobOutputs
from scdrugmap.serve.jobs import JOB_ID, Job, JobQueue
from scdrugmap.serve.uploads import (
    MAX_STAGED,
    MAX_STAGED_SECONDS,
    StagedUpload,
    receive,
    safe_filename,
)
from scdrugmap.store.storage import check_key
from scdrugmap.workflows.predict import read_predictor_record

router = APIRouter(prefix="/api", tags=["prediction jobs"])

JobId = Annotated[str, Path(pattern=JOB_ID.pattern, description="The job's id.")]
JobFigure = Literal[tuple(FIGURES)]
MAX_CELLS_PER_PAGE = 100_000
_FILE_BODY = (
    "The file itself (h5ad, 10x Cell Ranger .h5, or a .tsv/.txt/.csv table, optionally .gz), "
    "sent as the raw body"
)
_BINARY = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
_UPLOAD_BODY = {
    "requestBody": {"required": True, "description": f"{_FILE_BODY}.", "content": _BINARY}
}
_JOB_BODY = {
    "requestBody": {
        "required": False,
        "description": f"{_FILE_BODY}, with `filename`; none with `upload`.",
        "content": _BINARY,
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


def _as_uploaded(error: ScdrugmapError, folder: FilePath) -> ScdrugmapError:
    """The same error naming the file as the user gave it, not where the server keeps it."""
    return type(error)(str(error).replace(f"{folder}/", ""))


@router.post(
    "/uploads",
    status_code=201,
    summary="Upload cells for a job to come, and learn their per-cell columns",
    openapi_extra=_UPLOAD_BODY,
)
async def upload_cells(
    request: Request,
    filename: Annotated[
        str | None, Query(description="The file's name; its suffix gives the format.")
    ] = None,
) -> dict:
    """Send the file before starting its job when the job should name each cell's sample
    by a per-cell column. The answer gives `upload_id` (for `POST /api/jobs?upload=`), the
    file's per-cell `columns` (an .h5ad's obs columns, a cells-as-rows table's annotation
    columns; none for a 10x .h5), the column named sample, patient or donor as
    `suggested_sample_column` (else null), and `n_cells` where the file says it cheaply
    (null for a table). Only the columns are read, never the matrix, and a file they cannot
    be read from is refused with the message `ingest` would give. Same size limit as
    `POST /api/jobs`. An upload no job takes is deleted after an hour, when more than 8
    wait, or when the server stops."""
    if not filename:
        raise InputError("give the file's name as ?filename= (its suffix gives the format)")
    staged = _jobs(request).staged
    upload_id, path = staged.new_path(safe_filename(filename))
    try:
        size = await receive(request, path, request.app.state.settings.max_upload_bytes)
        cells = await run_in_threadpool(_cell_columns, path, _jobs(request))
    except ScdrugmapError as error:
        staged.discard(upload_id)
        raise _as_uploaded(error, path.parent) from None
    except BaseException:
        staged.discard(upload_id)
        raise
    upload = StagedUpload(upload_id, path.name, size, cells)
    staged.add(upload)
    return upload.public()


def _cell_columns(path: FilePath, queue: JobQueue) -> CellColumns:
    """The upload's per-cell columns, read within the server's limits (in this thread)."""
    with limited_reading(queue.limits):
        return read_cell_columns(path)


@router.delete(
    "/uploads/{upload_id}", status_code=204, summary="Delete an upload no job is to take"
)
def delete_upload(request: Request, upload_id: str) -> Response:
    """For a page whose user picked another file; unknown ids are not found."""
    staged = _jobs(request).staged
    if staged.take(upload_id) is None:
        raise HTTPException(404, f"no upload {upload_id!r} on this server")
    staged.discard(upload_id)
    return Response(status_code=204)


@router.post(
    "/jobs",
    status_code=202,
    summary="Start predicting the response of uploaded cells",
    openapi_extra=_JOB_BODY,
)
async def start_job(
    request: Request,
    predictor: Annotated[str, Query(description="A predictor kept by `scdrugmap train`.")],
    filename: Annotated[
        str | None,
        Query(
            description="The file's name, with the file as the body; its suffix gives the format."
        ),
    ] = None,
    upload: Annotated[
        str | None, Query(description="Instead of a body: an `upload_id` from POST /api/uploads.")
    ] = None,
    sample: Annotated[str | None, Query(description="Sample name of all cells.")] = None,
    sample_column: Annotated[
        str | None, Query(description="Per-cell column naming each cell's sample.")
    ] = None,
) -> dict:
    """The file comes as the body (with `filename`), or was sent before to
    `POST /api/uploads` (`upload`, which the job then takes: one job per upload). Without
    `sample` or `sample_column`, all cells are one sample named after the file. The file is
    checked as `scdrugmap ingest` checks it; a bad file fails the job with the same message
    and leaves the store unchanged."""
    queue = _jobs(request)
    read_predictor_record(queue.store, check_key(predictor, "predictor name"))
    if (filename is None) == (upload is None):
        raise InputError(
            "give ?filename= with the file as the body, or ?upload= with the upload_id that "
            "POST /api/uploads answered; one of the two"
        )
    if upload is not None:
        return _start_from_upload(queue, predictor, upload, sample, sample_column)
    job = queue.new_job(predictor, safe_filename(filename), sample, sample_column)
    try:
        await receive(request, queue.upload_path(job), request.app.state.settings.max_upload_bytes)
    except BaseException:
        queue.discard(job)
        raise
    queue.start(job)
    return job.public()


def _start_from_upload(
    queue: JobQueue, predictor: str, upload_id: str, sample: str | None, column: str | None
) -> dict:
    staged = queue.staged.take(upload_id)
    if staged is None:
        raise HTTPException(
            404,
            f"no upload {upload_id!r} on this server: a job took it already, or it was deleted "
            f"(unused uploads are kept {MAX_STAGED_SECONDS / 60:.0f} minutes, at most "
            f"{MAX_STAGED} at a time); upload the file again",
        )
    job = queue.new_job(predictor, staged.filename, sample, column)
    try:
        queue.start_with(job, queue.staged.path(staged))
    except BaseException:
        queue.discard(job)
        raise
    finally:
        queue.staged.discard(staged.id)
    return job.public()


@router.get("/jobs", summary="This server's jobs, newest first")
def list_jobs(request: Request) -> list[dict]:
    """Each as `GET /api/jobs/{id}` shows it: jobs this server ran (failed ones too, which
    leave nothing in the store) and the finished ones of earlier servers on this store."""
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
    """Barcode, sample, probability of sensitivity (`prob_sensitive`, calibrated, which the
    call follows; `prob_sensitive_raw`, the classifier's own), call, applicability domain
    (`domain_score`: the percentile, 0-100, of the cell's mean distance to its 10 nearest
    training cells of the predictor among the training cells' own; `in_domain`: below the
    predictor's domain quantile, kept in its record as `domain.quantile`; null and false
    for a cell without a call) and map coordinates per cell."""
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
    """Per sample: `n_cells`, `n_called` (cells with a call), `mean_prob_sensitive` (mean
    calibrated probability), `fraction_sensitive` (share of called cells called sensitive)
    with its 95 % Wilson interval `fraction_low`..`fraction_high`, and `call`: sensitive or
    resistant when that interval lies wholly above or below 0.5, `uncertain` when it holds
    0.5, `no call` when no cell got one; `fraction_in_domain` (share of the called cells in
    the predictor's applicability domain) and `domain_note`, "outside the predictor's
    domain" when that share is under 0.5 (the call then extrapolates), else empty."""
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
