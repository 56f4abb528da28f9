"""Administration, for admin keys: moving a space to another model while the server
answers (POST /admin/migrate), how it goes (GET), and going back (POST .../rollback).

docs/operations.md ("Changing the model without downtime") says what each step does."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Request
from pydantic import BaseModel, Field

from ..access import require_admin
from ..migration_service import JobKind, JobState, MigrationJob, MigrationRunner
from ..schemas import ErrorResponse, MigrationOut

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "A model spec that names no model"},
    409: {
        "model": ErrorResponse,
        "description": "Not in this state: a migration runs already, the space has that "
        "model already, nothing to roll back to",
    },
    503: {"model": ErrorResponse, "description": "The model's weights cannot be loaded"},
}
SpaceName = Literal["image-text", "audio-text"]


def runner_of(request: Request) -> MigrationRunner:
    return request.app.state.migrations


RunnerDep = Annotated[MigrationRunner, Depends(runner_of)]


class MigrateRequest(BaseModel):
    model: str = Field(
        min_length=1,
        max_length=1000,
        description="The new model, a spec as `xmodal index --model` takes "
        "(open_clip:ViT-B-32/laion2b_s34b_b79k, xmodal-ref, a checkpoint path...).",
    )
    space: SpaceName = Field("image-text", description="The space to move.")


class RollbackRequest(BaseModel):
    space: SpaceName = Field("image-text", description="The space to move back.")


class ProgressOut(BaseModel):
    done: int = Field(description="Items embedded with the new model, or recorded as failed.")
    total: int = Field(description="Items of the space.")
    embedded: int = Field(description="Items this run embedded.")
    failed: int = Field(description="Items this run could not embed.")


class FailureOut(BaseModel):
    uri: str
    reason: str


class JobOut(BaseModel):
    """The server's current or last migration."""

    kind: JobKind
    space: str
    model: str = Field(description="The model it embeds with.")
    state: JobState
    started_at: float = Field(description="Unix seconds.")
    finished_at: float | None = None
    progress: ProgressOut | None = Field(None, description="As of its last commit.")
    switched: bool = Field(False, description="Whether queries use its model now.")
    failures: list[FailureOut] = Field(
        default_factory=list, description="Items it could not embed, with why."
    )
    error: str | None = Field(None, description="Why it stopped, when it failed.")

    @classmethod
    def of(cls, job: MigrationJob) -> JobOut:
        report, progress = job.report, job.progress
        return cls(
            kind=job.kind,
            space=job.space,
            model=job.model,
            state=job.state,
            started_at=job.started_at,
            finished_at=job.finished_at,
            progress=None
            if progress is None
            else ProgressOut(
                done=progress.done,
                total=progress.total,
                embedded=progress.embedded,
                failed=progress.failed,
            ),
            switched=report is not None and report.switched,
            failures=[]
            if report is None
            else [FailureOut(uri=uri, reason=reason) for uri, reason in report.failed],
            error=job.error,
        )


class MigrationStateOut(BaseModel):
    job: JobOut | None = Field(description="The server's current or last migration; null: none.")
    migrations: list[MigrationOut] = Field(
        description="Where the store's migrations stand (also those run by `xmodal migrate`)."
    )


@router.post(
    "/migrate",
    operation_id="start_migration",
    response_model=JobOut,
    status_code=202,
    responses=ERRORS,
)
def start_migration(body: MigrateRequest, runner: RunnerDep) -> JobOut:
    """Move a space to another model while the server answers: the new model's vectors
    are made beside the old ones, in the background, then the space switches to them in
    one commit and the server takes up the new model. One at a time (409)."""
    return JobOut.of(runner.start(body.model, body.space))


@router.get("/migrate", operation_id="migration_state", response_model=MigrationStateOut)
def migration_state(runner: RunnerDep) -> MigrationStateOut:
    """The server's current or last migration, and where the store's migrations stand."""
    job = runner.job
    return MigrationStateOut(
        job=None if job is None else JobOut.of(job),
        migrations=[MigrationOut(**s.to_dict()) for s in runner.watch.statuses()],
    )


@router.post(
    "/migrate/rollback",
    operation_id="rollback_migration",
    response_model=JobOut,
    status_code=202,
    responses=ERRORS,
)
def rollback_migration(
    runner: RunnerDep, body: Annotated[RollbackRequest | None, Body()] = None
) -> JobOut:
    """Return a space to the model it had before its last switch (kept until
    `xmodal migrate --drop-old`): items indexed or changed since are embedded with it
    first, in the background. 409 when there is nothing to roll back to."""
    space = body.space if body is not None else "image-text"
    return JobOut.of(runner.start(None, space))
