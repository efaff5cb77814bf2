"""The staff-only archival API under /api/admin/archival/: trigger, status, logs, metrics,
schedule toggles and contact erasure. Staff sign in with their admin session or basic auth;
organization API keys are refused."""

from __future__ import annotations

from typing import Any

from django.db.models import Count, F, Sum
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.authentication import BasicAuthentication, SessionAuthentication
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from archival.erasure import ErasureRefused, contact_erase
from archival.models import ArchiveRun
from archival.schedule import next_runs, periodic_task, schedule_toggle
from archival.services import ArchiveJobBusy, archive_run_trigger
from conversations.models import Contact
from whatsapp_platform.authentication import ApiClient, ApiKeyAuthentication
from whatsapp_platform.models import Membership
from whatsapp_platform.roles import is_platform_operator, member_organization_ids

TAGS = ["Archival (staff)"]
# Every staff endpoint refuses anonymous callers (401) and non-staff users and API keys (403).
REFUSED = {401: OpenApiTypes.OBJECT, 403: OpenApiTypes.OBJECT}
JOBS = (ArchiveRun.JobType.MESSAGES, ArchiveRun.JobType.MEDIA)


class IsStaff(BasePermission):
    message = "Staff users only: sign in to the admin or use basic auth."

    def has_permission(self, request: Request, view: APIView) -> bool:
        user = request.user
        return (
            not isinstance(user, ApiClient)
            and bool(user and user.is_authenticated)
            and bool(getattr(user, "is_staff", False))
            # Archival spans organizations: members of organizations only erase their own
            # contacts (ContactEraseApi); superusers do the rest.
            and (getattr(view, "members_allowed", False) or is_platform_operator(user))
        )


class StaffApi(APIView):
    authentication_classes = (SessionAuthentication, BasicAuthentication, ApiKeyAuthentication)
    permission_classes = (IsStaff,)


def run_as_dict(run: ArchiveRun) -> dict[str, Any]:
    report = {k: v for k, v in (run.report or {}).items() if k not in ("positions", "after_id")}
    return {
        "id": run.id,
        "job_type": run.job_type,
        "state": run.state,
        "dry_run": run.dry_run,
        "triggered_by": run.triggered_by,
        "rows_archived": run.rows_archived,
        "rows_deleted": run.rows_deleted,
        "objects_written": run.objects_written,
        "bytes_written": run.bytes_written,
        "failures": run.failures,
        "error": run.error,
        "report": report,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "duration_seconds": run.duration_seconds,
    }


def _job(value: str) -> str:
    if value not in JOBS:
        raise exceptions.NotFound(f"No archival job {value!r}: use messages or media.")
    return value


class TriggerInput(serializers.Serializer):  # type: ignore[type-arg]
    job_type = serializers.ChoiceField(choices=("messages", "media", "both"))
    dry_run = serializers.BooleanField(default=False)


class ArchiveTriggerApi(StaffApi):
    @extend_schema(
        tags=TAGS,
        summary="Start archival runs now",
        parameters=[TriggerInput],
        request=None,
        responses={
            202: OpenApiTypes.OBJECT,
            400: OpenApiTypes.OBJECT,
            409: OpenApiTypes.OBJECT,
            **REFUSED,
        },
    )
    def post(self, request: Request) -> Response:
        data = {
            **request.query_params.dict(),
            **(request.data if isinstance(request.data, dict) else {}),
        }
        serializer = TriggerInput(data=data)
        if not serializer.is_valid():
            return Response(
                {"error": "Invalid parameters.", "errors": serializer.errors},
                status=status.HTTP_400_BAD_REQUEST,
            )
        job_type = serializer.validated_data["job_type"]
        jobs = JOBS if job_type == "both" else (job_type,)
        started: dict[str, int] = {}
        busy: dict[str, int] = {}
        for job in jobs:
            try:
                run = archive_run_trigger(
                    job_type=job,
                    triggered_by=ArchiveRun.Trigger.API,
                    dry_run=serializer.validated_data["dry_run"],
                )
            except ArchiveJobBusy as exc:
                busy[job] = exc.run.id
                continue
            started[job] = run.id
        if not started:
            return Response(
                {"error": "A run of this job is already under way.", "running": busy},
                status=status.HTTP_409_CONFLICT,
            )
        return Response({"runs": started, "running": busy}, status=status.HTTP_202_ACCEPTED)


class ArchiveStatusApi(StaffApi):
    @extend_schema(
        tags=TAGS,
        summary="Running and last runs, next scheduled times, enabled flags",
        responses={200: OpenApiTypes.OBJECT, **REFUSED},
    )
    def get(self, request: Request) -> Response:
        jobs = {}
        for job in JOBS:
            task = periodic_task(job)
            running = ArchiveRun.objects.filter(job_type=job, state__in=ArchiveRun.ACTIVE_STATES)
            last = ArchiveRun.objects.filter(
                job_type=job, state__in=(ArchiveRun.State.SUCCEEDED, ArchiveRun.State.FAILED)
            ).first()
            jobs[job] = {
                "enabled": bool(task and task.enabled),
                "schedule": str(task.crontab) if task and task.crontab else None,
                "next_run_at": next((t.isoformat() for t in next_runs(job, count=1)), None),
                "running": [run_as_dict(run) for run in running],
                "last_run": run_as_dict(last) if last else None,
            }
        return Response({"jobs": jobs})


class ArchiveLogsApi(StaffApi):
    @extend_schema(
        tags=TAGS,
        summary="Recent runs of a job, with counts, durations and errors",
        responses={
            200: OpenApiTypes.OBJECT,
            400: OpenApiTypes.OBJECT,
            404: OpenApiTypes.OBJECT,
            **REFUSED,
        },
    )
    def get(self, request: Request, job: str) -> Response:
        _job(job)
        try:
            limit = min(max(int(request.query_params.get("limit", 20)), 1), 100)
        except ValueError:
            return Response({"error": "limit must be a number."}, status=400)
        runs = ArchiveRun.objects.filter(job_type=job)[:limit]
        return Response({"job": job, "runs": [run_as_dict(run) for run in runs]})


class ArchiveMetricsApi(StaffApi):
    @extend_schema(
        tags=TAGS,
        summary="Totals of rows, objects, bytes, failures and durations",
        responses={200: OpenApiTypes.OBJECT, **REFUSED},
    )
    def get(self, request: Request) -> Response:
        totals = {}
        for job in ArchiveRun.JobType.values:
            runs = ArchiveRun.objects.filter(job_type=job, dry_run=False)
            figures = runs.aggregate(
                runs=Count("id"),
                rows=Sum("rows_archived"),
                rows_deleted=Sum("rows_deleted"),
                objects=Sum("objects_written"),
                bytes=Sum("bytes_written"),
                failures=Sum("failures"),
                duration=Sum(F("finished_at") - F("started_at")),
            )
            failed = runs.filter(state=ArchiveRun.State.FAILED).count()
            duration = figures.pop("duration")
            totals[job] = {
                **{k: v or 0 for k, v in figures.items()},
                "failed_runs": failed,
                "duration_seconds": duration.total_seconds() if duration else 0.0,
            }
        return Response({"totals": totals})


class ArchiveScheduleToggleApi(StaffApi):
    @extend_schema(
        tags=TAGS,
        summary="Enable or disable a job's periodic run",
        request=None,
        responses={200: OpenApiTypes.OBJECT, 404: OpenApiTypes.OBJECT, **REFUSED},
    )
    def post(self, request: Request, job: str) -> Response:
        _job(job)
        try:
            enabled = schedule_toggle(job)
        except LookupError as exc:
            raise exceptions.NotFound(str(exc)) from None
        return Response({"job": job, "enabled": enabled})


class EraseInput(serializers.Serializer):  # type: ignore[type-arg]
    contact_id = serializers.IntegerField(min_value=1)


class ContactEraseApi(StaffApi):
    members_allowed = True

    @extend_schema(
        tags=TAGS,
        summary="Erase one contact everywhere (right to erasure)",
        request=EraseInput,
        responses={
            200: OpenApiTypes.OBJECT,
            400: OpenApiTypes.OBJECT,
            404: OpenApiTypes.OBJECT,
            409: OpenApiTypes.OBJECT,
            **REFUSED,
        },
    )
    def post(self, request: Request) -> Response:
        serializer = EraseInput(data=request.data)
        if not serializer.is_valid():
            return Response(
                {"error": "Invalid parameters.", "errors": serializer.errors}, status=400
            )
        organization_ids = member_organization_ids(request.user, (Membership.Role.ADMIN,))
        if (
            organization_ids is not None
            and not Contact.tenant.for_organizations(organization_ids)
            .filter(id=serializer.validated_data["contact_id"])
            .exists()
        ):
            return Response({"error": "No such contact."}, status=404)
        try:
            report = contact_erase(
                contact_id=serializer.validated_data["contact_id"],
                triggered_by=ArchiveRun.Trigger.API,
            )
        except Contact.DoesNotExist:
            return Response({"error": "No such contact."}, status=404)
        except ErasureRefused as exc:
            return Response({"error": str(exc)}, status=409)
        return Response(report.as_dict())
