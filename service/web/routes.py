"""Every route of the service, in one list, each with its name.

OC4's participant API, its jobs and the token call follow OC4's paths (under
``PARTICIPANTS_PATH_PREFIX``); the admin API and the service's own face (probes, metrics, the
OpenAPI document) live at the root whatever the prefix. Handlers declare their OpenAPI details
themselves (service/web/apidoc.py); the generator reads them from the routes registered here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from service.core.urls import ADMIN_API, JOBS_PATH, OC4_API, SITE_PATH, STUDY_PATH, TOKEN_PATH
from service.web.handlers import (
    accounts,
    admin_directory,
    admin_invitations,
    admin_jobs,
    bulk,
    erasure,
    extracts,
    jobs,
    participant_access,
    participants,
    probes,
    webhooks,
)

Route = tuple[str, str, Callable[..., Any], str]  # method, path, handler, name


def oc4_routes() -> list[Route]:
    """OC4's paths, relative to the path prefix."""
    found: list[Route] = []
    # A participant ID is any path segment but the words of the sibling routes, so that a 405 there
    # names only their methods (a participant with such an ID is not reachable by URL, as in OC4).
    key = "{subjectKey:(?!(?:bulk|searchByFields|extractPartcipantsInfo|extractParticipantsInfo)$)[^{}/]+}"
    # Site level first: a site's calls are the busy ones (a CTMS adding participants), and aiohttp
    # tries the routes that share a path prefix in the order they were added.
    for level, path in (("site", SITE_PATH), ("study", STUDY_PATH)):
        found += [
            ("POST", path + "/participants", participants.add_participant, f"add_participant_{level}"),
            ("GET", path + "/participants", participants.get_participants, f"list_participants_{level}"),
            ("DELETE", path + "/participants/" + key, participants.remove_participant,
             f"remove_participant_{level}"),
            ("POST", path + "/participants/" + key + "/restore", participants.restore_participant,
             f"restore_participant_{level}"),
            ("POST", path + "/participants/" + key + "/erase", erasure.erase_participant,
             f"erase_participant_{level}"),
            ("POST", path + "/participants/bulk", bulk.bulk_upload, f"bulk_upload_{level}"),
            ("GET", path + "/participant", participant_access.get_participant_detail, f"participant_detail_{level}"),
        ]  # fmt: skip
    one = STUDY_PATH + "/participants/" + key
    found += [
        ("GET", STUDY_PATH + "/participants/searchByFields", participant_access.search_participants, "search_participants"),
        ("GET", STUDY_PATH + "/participantUsers", participant_access.list_participant_users, "participant_users"),
        ("GET", one, participant_access.get_participant_account, "participant_account"),
        ("GET", one + "/accessLink", participant_access.get_access_link, "access_link"),
        ("POST", one + "/connect", participant_access.connect_participant, "connect_participant"),
        ("PUT", one + "/participateStatus", participant_access.put_participate_status, "participate_status"),
        ("GET", one + "/invitations", participant_access.list_participant_invitations, "participant_invitations"),
    ]  # fmt: skip
    # Seed 000 spells it "Partcipants"; the correct spelling is accepted too.
    for suffix, spelling in (("", "extractPartcipantsInfo"), ("_spelled", "extractParticipantsInfo")):
        found += [
            ("GET", SITE_PATH + "/participants/" + spelling, extracts.submit_extract, f"extract_get{suffix}"),
            (
                "POST",
                SITE_PATH + "/participants/" + spelling,
                extracts.submit_extract,
                f"extract_post{suffix}",
            ),
        ]
    found += [
        ("GET", JOBS_PATH, jobs.list_jobs, "list_jobs"),
        ("GET", OC4_API + "/studies/{studyOID}/jobs", jobs.list_jobs_oc4, "list_jobs_study"),
        ("GET", OC4_API + "/studies/{studyOID}/sites/{siteOID}/jobs", jobs.list_jobs_oc4, "list_jobs_site"),
        ("GET", JOBS_PATH + "/{jobUuid}", jobs.get_job, "get_job"),
        ("DELETE", JOBS_PATH + "/{jobUuid}", jobs.delete_job, "delete_job"),
        ("GET", JOBS_PATH + "/{jobUuid}/downloadFile", jobs.download_file, "download_file"),
    ]
    return found


def root_routes() -> list[Route]:
    """Paths at the root, whatever the prefix."""
    a = ADMIN_API
    job = "{jobUuid:(?!purge-expired$)[^{}/]+}"  # so that a 405 on purge-expired names POST alone
    inv, tpl = a + "/studies/{studyOID}/invitations", a + "/studies/{studyOID}/invitation-templates"
    return [
        # OC4 serves the token call at the host root, beside /OpenClinica.
        ("POST", TOKEN_PATH, accounts.token, "token"),
        ("POST", a + "/studies", admin_directory.create_study, "create_study"),
        ("GET", a + "/studies", admin_directory.list_studies, "list_studies"),
        ("GET", a + "/studies/{studyOID}", admin_directory.get_study, "get_study"),
        ("PATCH", a + "/studies/{studyOID}", admin_directory.patch_study, "patch_study"),
        ("POST", a + "/studies/{studyOID}/sites", admin_directory.create_site, "create_site"),
        ("GET", a + "/studies/{studyOID}/sites", admin_directory.list_sites, "list_sites"),
        ("PATCH", a + "/studies/{studyOID}/sites/{siteOID}", admin_directory.patch_site, "patch_site"),
        ("GET", inv, admin_invitations.list_invitations, "admin_list_invitations"),
        (
            "POST",
            a + "/studies/{studyOID}/participants/{subjectKey}/erase",
            erasure.admin_erase_participant,
            "admin_erase_participant",
        ),
        ("GET", tpl, admin_invitations.list_templates, "list_invitation_templates"),
        ("PUT", tpl + "/email", admin_invitations.set_email_template, "set_email_template"),
        ("DELETE", tpl + "/email", admin_invitations.reset_email_template, "reset_email_template"),
        ("PUT", tpl + "/sms", admin_invitations.set_sms_template, "set_sms_template"),
        ("DELETE", tpl + "/sms", admin_invitations.reset_sms_template, "reset_sms_template"),
        ("POST", a + "/users", admin_directory.create_user, "create_user"),
        ("GET", a + "/users", admin_directory.list_users, "list_users"),
        ("PATCH", a + "/users/{username}", admin_directory.patch_user, "patch_user"),
        ("PUT", a + "/users/{username}/password", accounts.set_password, "set_password"),
        ("POST", a + "/users/{username}/sessions/revoke", admin_directory.revoke_sessions, "revoke_sessions"),
        ("POST", a + "/users/{username}/roles", admin_directory.grant_role, "grant_role"),
        ("GET", a + "/users/{username}/roles", admin_directory.list_roles, "list_roles"),
        ("DELETE", a + "/users/{username}/roles", admin_directory.revoke_role, "revoke_role"),
        ("POST", a + "/webhooks", webhooks.create_webhook, "create_webhook"),
        ("GET", a + "/webhooks", webhooks.list_webhooks, "list_webhooks"),
        ("POST", a + "/webhooks/deliveries/{deliveryId}/redeliver", webhooks.redeliver, "redeliver"),
        ("GET", a + "/webhooks/{id}", webhooks.get_webhook, "get_webhook"),
        ("PATCH", a + "/webhooks/{id}", webhooks.patch_webhook, "patch_webhook"),
        ("DELETE", a + "/webhooks/{id}", webhooks.delete_webhook, "delete_webhook"),
        ("POST", a + "/webhooks/{id}/rotate-secret", webhooks.rotate_secret, "rotate_secret"),
        ("GET", a + "/webhooks/{id}/deliveries", webhooks.list_deliveries, "list_deliveries"),
        ("GET", a + "/jobs", admin_jobs.list_jobs, "admin_list_jobs"),
        ("POST", a + "/jobs/purge-expired", admin_jobs.purge_expired, "admin_purge_expired"),
        ("GET", a + "/jobs/" + job, admin_jobs.get_job, "admin_get_job"),
        ("POST", a + "/jobs/" + job + "/retry", admin_jobs.retry_job, "admin_retry_job"),
        ("POST", a + "/jobs/" + job + "/cancel", admin_jobs.cancel_job, "admin_cancel_job"),
        ("GET", a + "/audit", admin_jobs.list_audit, "admin_list_audit"),
        ("GET", a + "/queue", admin_jobs.get_queue, "admin_queue"),
        # The service's own face: probes and scrapers look at the root.
        ("GET", "/healthz", probes.healthz, "healthz"),
        ("GET", "/readyz", probes.readyz, "readyz"),
        ("GET", "/metrics", probes.metrics, "metrics"),
        ("GET", "/openapi.json", probes.openapi_json, "openapi"),
        ("GET", "/docs", probes.docs, "docs"),
        ("GET", "/docs/", probes.docs, "docs_slash"),
        ("GET", "/docs/redoc.standalone.js", probes.docs_asset, "docs_asset"),
    ]


def all_routes(path_prefix: str = "") -> list[Route]:
    p = path_prefix.rstrip("/")
    found = [(m, p + path, h, name) for m, path, h, name in oc4_routes()] + root_routes()
    if p:  # the token call under the prefix too, for proxies that forward only that path
        found.append(("POST", p + TOKEN_PATH, accounts.token, "token_prefixed"))
    return found


def setup_routes(app: web.Application, path_prefix: str = "") -> None:
    for method, path, handler, name in all_routes(path_prefix):
        if method == "GET":  # with HEAD, as aiohttp's add_get gives it
            app.router.add_get(path, handler, name=name)
        else:
            app.router.add_route(method, path, handler, name=name)
