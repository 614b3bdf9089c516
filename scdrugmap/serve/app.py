"""The FastAPI application: routes, the guard in front of them, and the page."""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from scdrugmap.errors import ScdrugmapError, StoreError
from scdrugmap.serve.catalog_routes import router as catalog_router
from scdrugmap.serve.explain_routes import router as explain_router
from scdrugmap.serve.job_routes import router as job_router
from scdrugmap.serve.jobs import JobQueue
from scdrugmap.serve.security import guard
from scdrugmap.serve.settings import ServeSettings
from scdrugmap.serve.uploads import UploadTooLarge

STATIC = Path(__file__).parent / "static"
# Kept inside the store, so the server writes nowhere else.
WORK_FOLDER = "serve"
DESCRIPTION = (
    "Per-cell drug-response predictions from single-cell RNA-seq over one scdrugmap store. "
    "Upload a file to POST /api/jobs, poll GET /api/jobs/{id}, then read its cells, samples "
    "and figures. Every error is JSON {'detail': one line naming the problem and the fix}."
)


async def _user_error(request: Request, error: ScdrugmapError) -> JSONResponse:
    if isinstance(error, UploadTooLarge):
        status = 413
    elif isinstance(error, StoreError):
        status = 404
    else:
        status = 400
    return JSONResponse({"detail": str(error)}, status_code=status)


def create_app(store, settings: ServeSettings) -> FastAPI:
    from scdrugmap.version import __version__

    work_dir = store.path / WORK_FOLDER
    jobs = JobQueue(
        store, work_dir, settings.device, settings.read_limits(), settings.job_memory_bytes
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        jobs.shutdown()

    app = FastAPI(
        title="scdrugmap",
        version=__version__,
        description=DESCRIPTION,
        openapi_url="/api/openapi.json",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.store = store
    app.state.settings = settings
    app.state.jobs = jobs
    app.state.figure_cache = work_dir / "predictors"
    app.middleware("http")(guard(settings))
    app.add_exception_handler(ScdrugmapError, _user_error)
    app.include_router(catalog_router)
    app.include_router(job_router)
    app.include_router(explain_router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    return app


def serve(store, settings: ServeSettings) -> None:
    """Run the server until interrupted (Ctrl-C)."""
    import uvicorn

    uvicorn.run(
        create_app(store, settings.check()),
        host=settings.host,
        port=settings.port,
        log_level="info",
        access_log=False,
    )
