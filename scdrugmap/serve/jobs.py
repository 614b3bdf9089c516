"""Prediction jobs: queued, run one at a time in a worker thread, watched by polling.

One at a time because embedding already uses every core (or the GPU); a second
job waits its turn instead of halving both. A job ingests the upload as a data
set of its own, embeds and classifies it (the `predict` workflow), then draws its
figures. Its upload is deleted once ingested. When it fails, its data set,
upload and folder are removed, so the store is as it was, and the job keeps
the one-line message `ingest` would have printed for the same file, and the
stage it failed in.

A file may also be uploaded before its job (`StagedUploads`), so the page can
ask which per-cell column names the samples; the job then takes that file.

Each job runs in a process of its own, forked from a server process that has
imported the prediction code once (multiprocessing's forkserver, so starting a
job costs milliseconds), with its memory capped (`RLIMIT_DATA`, `--job-memory-mb`):
a file that passes the read limits and still needs more memory than the cap
fails its job alone, with a one-line message, and the server goes on. The job
process writes the data set, the embedding and the job's outputs itself, and
reports progress and its end through a pipe.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import re
import secrets
import shutil
import sys
import threading
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from scdrugmap.data.prepare import file_stem
from scdrugmap.data.source import ReadLimits, as_mib, limited_reading, physical_memory
from scdrugmap.errors import InputError, ScdrugmapError
from scdrugmap.progress import progress_to
from scdrugmap.provenance import utc_now
from scdrugmap.serve.job_outputs import JobOutputs, write_outputs
from scdrugmap.serve.uploads import StagedUploads
from scdrugmap.workflows.predict import predict

log = logging.getLogger("scdrugmap.serve")

RECORD = "job.json"
JOB_ID = re.compile(r"^[0-9a-f]{12}$")
# A job's process may take this share of the machine's memory unless told otherwise.
JOB_MEMORY_SHARE = 0.75
_POLL_SECONDS = 0.1
_PR_SET_PDEATHSIG = 1
# What job processes import once in the process they are forked from, besides this module
# and the store's class: what a prediction imports only when it runs (reading, writing a
# data set, the figures), so that a job starts in milliseconds instead of seconds.
_PRELOAD = (
    "scdrugmap.data.prepare",
    "scdrugmap.store.ingest",
    "matplotlib.backends.backend_agg",
    "matplotlib.figure",
)


class JobProcessError(Exception):
    """A job's process failed for a reason that is not the user's (or died)."""


@dataclass
class Job:
    id: str
    predictor: str
    filename: str
    sample: str | None = None
    sample_column: str | None = None
    state: str = "queued"
    stage: str = "waiting for the jobs before it"
    done: int = 0
    total: int = 0
    error: str | None = None
    created_at: str = field(default_factory=lambda: utc_now().isoformat())
    finished_at: str | None = None
    outputs: JobOutputs | None = None

    @property
    def dataset_id(self) -> str:
        return f"upload-{self.id}"

    def public(self) -> dict:
        """What the API shows of the job."""
        summary = {
            "id": self.id,
            "predictor": self.predictor,
            "filename": self.filename,
            "sample": self.sample,
            "sample_column": self.sample_column,
            "state": self.state,
            "stage": self.stage,
            "done": self.done,
            "total": self.total,
            "fraction": round(self.done / self.total, 4) if self.total else None,
            "error": self.error,
            "created_at": self.created_at,
            "finished_at": self.finished_at,
        }
        if self.outputs is not None:
            summary.update(
                dataset_id=self.dataset_id,
                n_cells=self.outputs.n_cells,
                n_samples=self.outputs.n_samples,
                gene_coverage=self.outputs.gene_coverage,
                coverage_basis=self.outputs.coverage_basis,
            )
        return summary

    def record(self) -> dict:
        """What a finished job keeps in its folder, to be listed again after a restart."""
        fields = ("id", "predictor", "filename", "sample", "sample_column", "done", "total")
        return {
            **{name: getattr(self, name) for name in fields},
            "created_at": self.created_at,
            "finished_at": self.finished_at,
            "n_cells": self.outputs.n_cells,
            "n_samples": self.outputs.n_samples,
            "gene_coverage": self.outputs.gene_coverage,
            "coverage_basis": self.outputs.coverage_basis,
        }

    @classmethod
    def restored(cls, record: dict, folder: Path) -> Job:
        outputs = JobOutputs(
            folder,
            int(record.pop("n_cells")),
            int(record.pop("n_samples")),
            record.pop("gene_coverage", None),
            record.pop("coverage_basis", None),
        )
        return cls(**record, state="done", stage="done", outputs=outputs)


class JobQueue:
    """The server's jobs, by id, and the one worker thread that runs them."""

    def __init__(
        self,
        store,
        work_dir: Path,
        device: str,
        limits: ReadLimits | None = None,
        job_memory_bytes: int | None = None,
    ) -> None:
        self.store = store
        self.work_dir = work_dir
        self.device = device
        # What an uploaded file may unpack to (the server's options).
        self.limits = limits or ReadLimits()
        self.job_memory_bytes = job_memory_bytes or int(JOB_MEMORY_SHARE * physical_memory())
        self._context = _job_context([__name__, type(store).__module__, *_PRELOAD])
        self._jobs: dict[str, Job] = self._finished_before()
        self._lock = threading.Lock()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scdrugmap-job")
        self.staged = StagedUploads(work_dir / "staged")

    def _finished_before(self) -> dict[str, Job]:
        """Jobs an earlier server finished in this store, so their results stay reachable."""
        jobs = {}
        for record in sorted((self.work_dir / "jobs").glob(f"*/{RECORD}")):
            folder = record.parent
            try:
                job = Job.restored(json.loads(record.read_text()), folder)
            except (ValueError, TypeError, KeyError) as error:
                log.warning("skipped job folder %s: unreadable %s (%s)", folder, RECORD, error)
                continue
            if JOB_ID.match(job.id) and job.id == folder.name:
                jobs[job.id] = job
        return jobs

    def new_job(self, predictor: str, filename: str, sample: str | None, column: str | None):
        job = Job(secrets.token_hex(6), predictor, filename, sample or None, column or None)
        with self._lock:
            self._jobs[job.id] = job
        return job

    def upload_path(self, job: Job) -> Path:
        return self.work_dir / "uploads" / job.id / job.filename

    def output_dir(self, job: Job) -> Path:
        return self.work_dir / "jobs" / job.id

    def start(self, job: Job) -> None:
        self._worker.submit(self._run, job)

    def start_with(self, job: Job, upload: Path) -> None:
        """Start a job on a file uploaded before it; the file moves into the job's folder
        (the same file system, so nothing is copied)."""
        destination = self.upload_path(job)
        destination.parent.mkdir(parents=True, exist_ok=True)
        upload.replace(destination)
        self.start(job)

    def discard(self, job: Job) -> None:
        """Forget a job whose upload never completed, and its partial file."""
        with self._lock:
            self._jobs.pop(job.id, None)
        self._remove(self.upload_path(job).parent)

    def _remove(self, folder: Path) -> None:
        """Delete a job's folder, and the server's folders above it once they are empty,
        so a job that failed leaves no trace in the store."""
        shutil.rmtree(folder, ignore_errors=True)
        for parent in (folder.parent, self.work_dir):
            try:
                parent.rmdir()
            except OSError:
                return

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def all(self) -> list[Job]:
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: j.created_at, reverse=True)

    def shutdown(self) -> None:
        """Stop taking jobs: the running one finishes, queued ones are dropped with their
        uploads, and so are uploads no job took."""
        self._worker.shutdown(wait=False, cancel_futures=True)
        for job in self.all():
            if job.state == "queued":
                self.discard(job)
        self.staged.clear()

    def _run(self, job: Job) -> None:
        upload = self.upload_path(job)
        job.state, job.stage = "running", "reading and checking the file"
        try:
            outputs = self._run_in_process(job, upload)
        except BaseException as error:
            self._remove(upload.parent)
            self._fail(job, error)
            return
        self._remove(upload.parent)
        # The state changes last, so whoever sees "done" finds everything in place.
        job.outputs, job.finished_at = outputs, utc_now().isoformat()
        (outputs.folder / RECORD).write_text(json.dumps(job.record()))
        job.state, job.stage = "done", "done"

    def _run_in_process(self, job: Job, upload: Path) -> JobOutputs:
        """Run the job in a process of its own, following its progress; its outputs, or
        the error it ended with."""
        context = self._context
        receiver, sender = context.Pipe(duplex=False)
        task = {
            "store_class": type(self.store),
            "store": str(self.store.path),
            "predictor": job.predictor,
            "upload": str(upload),
            "dataset_id": job.dataset_id,
            "samples": _samples(job),
            "sample_column": job.sample_column,
            "device": self.device,
            "output_dir": str(self.output_dir(job)),
        }
        process = context.Process(
            target=_job_process,
            args=(task, self.limits, self.job_memory_bytes, sender),
            name=f"scdrugmap-job-{job.id}",
            daemon=True,
        )
        process.start()
        sender.close()
        try:
            end = self._follow(job, process, receiver)
        finally:
            receiver.close()
            process.join()
        kind, *details = end
        if kind == "done":
            return JobOutputs(self.output_dir(job), *details)
        if kind == "error":
            raise ScdrugmapError(details[0])
        if kind == "memory":
            raise InputError(
                f"{job.filename}: reading and predicting it needed more than the "
                f"{as_mib(self.job_memory_bytes)} a job may use; subset the cells, or start "
                "the server with a larger --job-memory-mb"
            )
        if kind == "internal":
            log.error("job %s failed in its process:\n%s", job.id, details[1])
            raise JobProcessError(details[0])
        code = process.exitcode
        why = " (killed, most likely for memory)" if code == -9 else ""
        raise JobProcessError(f"the job's process ended with exit code {code}{why}")

    def _follow(self, job: Job, process, receiver) -> tuple:
        """Progress messages until the last one; ('died',) when the process ended without."""
        while True:
            if receiver.poll(_POLL_SECONDS):
                try:
                    message = receiver.recv()
                except EOFError:
                    return ("died",)
                if message[0] == "progress":
                    job.stage, job.done, job.total = message[1:]
                elif message[0] == "stage":
                    job.stage = message[1]
                else:
                    return message
            elif not process.is_alive() and not receiver.poll(0):
                return ("died",)

    def _fail(self, job: Job, error: BaseException) -> None:
        if isinstance(error, ScdrugmapError):
            # The message names the file as the user gave it, not where the server kept it.
            job.error = str(error).replace(f"{self.upload_path(job).parent}/", "")
        elif isinstance(error, JobProcessError):
            job.error = f"internal error ({error}); see the server log"
        else:
            log.exception("job %s failed", job.id)
            job.error = f"internal error ({type(error).__name__}: {error}); see the server log"
        self._remove(self.output_dir(job))
        if job.dataset_id in self.store.dataset_ids():
            self.store.drop_dataset(job.dataset_id)
        job.finished_at = utc_now().isoformat()
        job.state = "failed"  # the stage stays the one it failed in
        if not isinstance(error, Exception):
            raise error


def _job_context(preload: list[str]):
    """Job processes forked from a process that imported `preload` once (forkserver),
    where the system has it; else started afresh."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    from multiprocessing import forkserver

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(preload)
    # Its imports take seconds: begun now, in the background, not by the first job.
    threading.Thread(target=forkserver.ensure_running, daemon=True).start()
    return context


def _job_process(task: dict, limits: ReadLimits, memory_bytes: int, sender) -> None:
    """A job's process: cap its memory, predict, write the outputs, say how it ended."""
    _die_with_parent()
    _cap_memory(memory_bytes)

    def listen(description: str, done: int, total: int, status: str) -> None:
        sender.send(("progress", description, done, total))

    try:
        store = task["store_class"](task["store"])
        with progress_to(listen), limited_reading(limits):
            result = predict(
                store,
                task["predictor"],
                [Path(task["upload"])],
                dataset_id=task["dataset_id"],
                samples=task["samples"],
                sample_column=task["sample_column"],
                device=task["device"],
            )
        sender.send(("stage", "drawing the map and histograms"))
        outputs = write_outputs(result, Path(task["output_dir"]))
        end = ("done", outputs.n_cells, outputs.n_samples)
        end += (outputs.gene_coverage, outputs.coverage_basis)
    except ScdrugmapError as error:
        end = ("error", str(error))
    except MemoryError:
        end = ("memory",)
    except BaseException as error:
        end = ("internal", f"{type(error).__name__}: {error}", traceback.format_exc())
    sender.send(end)
    sender.close()


def _die_with_parent() -> None:
    """On Linux, end with the process this one was forked from (the forkserver, which ends
    with the server), so a server that was killed leaves no job writing to its store."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        log.warning("a job of this server may outlive it")


def _cap_memory(memory_bytes: int) -> None:
    """Let this process allocate at most `memory_bytes` (an allocation past it raises
    MemoryError); where the system cannot, the job runs uncapped."""
    try:
        import resource

        hard = resource.getrlimit(resource.RLIMIT_DATA)[1]
        cap = memory_bytes if hard == resource.RLIM_INFINITY else min(memory_bytes, hard)
        resource.setrlimit(resource.RLIMIT_DATA, (cap, hard))
    except (ImportError, AttributeError, ValueError, OSError):
        log.warning("job memory cap of %s not set on this system", as_mib(memory_bytes))


def _samples(job: Job) -> list[str]:
    """The sample name the page gave, else the file's name without its suffixes (as
    `ingest` names the samples of several files); none when a column names them."""
    if job.sample_column:
        return []
    return [job.sample or file_stem(Path(job.filename))]
