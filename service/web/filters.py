"""The admin API's list filters, read from a query string: the same parsing (and the same 400s) for
the admin API and the operators' console pages."""

from __future__ import annotations

from aiohttp import web

from service.core.audit import AuditFilters
from service.core.jobs.model import JOB_STATUSES, JOB_TYPES
from service.core.jobs.store import JobFilters
from service.web.input import query_choice, query_instant, query_text


def job_filters(request: web.Request) -> JobFilters:
    return JobFilters(
        status=query_choice(request, "status", JOB_STATUSES),
        job_type=query_choice(request, "type", JOB_TYPES),
        study_oid=query_text(request, "studyOid"),
        site_oid=query_text(request, "siteOid"),
        owner=query_text(request, "owner"),
        created_from=query_instant(request, "createdFrom"),
        created_to=query_instant(request, "createdTo"),
    )


def audit_filters(request: web.Request) -> AuditFilters:
    return AuditFilters(
        username=query_text(request, "user"),
        action=query_text(request, "action"),
        study_oid=query_text(request, "studyOid"),
        site_oid=query_text(request, "siteOid"),
        start=query_instant(request, "from"),
        end=query_instant(request, "to"),
    )
