"""The genes behind a finished prediction job's calls: ranked between the cells it called
resistant and those it called sensitive (`scdrugmap explain`, on the job's own calls).

Ranked the first time they are asked for and kept in the job's folder, so reopening the
job (or a server restarted on the store) answers from there.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path as FilePath
from typing import Annotated

import pandas as pd
from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import FileResponse

from scdrugmap.serve.frames import FigureFormat, figure_response, records
from scdrugmap.serve.jobs import JOB_ID, Job
from scdrugmap.workflows.explain import GROUPS, explain, write_explanation

router = APIRouter(prefix="/api", tags=["prediction jobs"])

JobId = Annotated[str, Path(pattern=JOB_ID.pattern, description="The job's id.")]
# What the ranking may hold in the server's memory; a larger upload takes more passes.
MEMORY_MB = 512
TABLE, FIGURE, SUMMARY = "genes.csv", "volcano.png", "genes.json"
# Two requests for a job not ranked yet must not both write its files.
_RANKING = threading.Lock()


def _done_job(request: Request, job_id: str) -> Job:
    job = request.app.state.jobs.get(job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id!r} on this server")
    if job.state == "failed":
        raise HTTPException(409, f"job {job_id} failed: {job.error}")
    if job.outputs is None:
        raise HTTPException(409, f"job {job_id} is {job.state} ({job.stage}); wait until done")
    return job


def _ranked(request: Request, job: Job) -> FilePath:
    """The job's folder, holding its ranking (made now if it is not there yet)."""
    folder = job.outputs.folder
    with _RANKING:
        if not (folder / SUMMARY).is_file():
            result = explain(
                request.app.state.store,
                job.predictor,
                job.dataset_id,
                calls=job.outputs.cells,
                memory_mb=MEMORY_MB,
            )
            write_explanation(result, folder / TABLE, folder / FIGURE)
            # Written last: whoever finds it finds the table and the figure in place.
            (folder / SUMMARY).write_text(json.dumps(result.summary()))
    return folder


@router.get("/jobs/{job_id}/genes.json", summary="Genes ranked between the job's calls")
def genes_json(
    request: Request,
    job_id: JobId,
    top: Annotated[int, Query(ge=1, le=500, description="Genes shown each way.")] = 15,
) -> dict:
    """The genes most up in the cells the job called resistant, and in those it called
    sensitive (`top` each): scanpy's Wilcoxon rank-sum test on log1p counts per 10,000
    (tie-corrected z-score as `score`, `logfoldchange`, `pval`, Benjamini-Hochberg
    `pval_adj`, and the share of each group's cells expressing the gene). Cells with no
    call are left out; a job that called fewer than two cells of either kind is answered
    400 with the counts. The first request ranks them (seconds for an upload of thousands
    of cells); the full table is `genes.csv`, the volcano plot `genes/volcano.png|svg`."""
    job = _done_job(request, job_id)
    folder = _ranked(request, job)
    table = pd.read_csv(folder / TABLE, dtype={"gene": str, "group": str}, keep_default_na=False)
    summary = json.loads((folder / SUMMARY).read_text())
    tops = {g: records(table[table["group"] == g].head(top)) for g in GROUPS}
    return {"job": job.id, **summary, "top": tops}


@router.get("/jobs/{job_id}/genes.csv", summary="The job's full gene ranking as CSV")
def genes_csv(request: Request, job_id: JobId) -> FileResponse:
    folder = _ranked(request, _done_job(request, job_id))
    return FileResponse(folder / TABLE, media_type="text/csv", filename=f"{job_id}-genes.csv")


@router.get(
    "/jobs/{job_id}/genes/volcano.{fmt}",
    summary="Volcano plot of the job's gene ranking, as PNG or SVG",
    response_class=FileResponse,
)
def genes_figure(request: Request, job_id: JobId, fmt: FigureFormat):
    folder = _ranked(request, _done_job(request, job_id))
    return figure_response((folder / FIGURE).with_suffix(f".{fmt}"), fmt)
