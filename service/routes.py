"""Every route of the service, in one place.

Capability modules that own their routes (bulk upload, extracts and jobs, webhooks, the
service's own face) expose ``add_routes(router, prefix)`` and are called from here.
"""

from __future__ import annotations

from aiohttp import web

from . import admin, bulk, extracts, jobs, ops, participants, webhooks

API = "/pages/auth/api"
STUDY = API + "/clinicaldata/studies/{studyOID}"
SITE = STUDY + "/sites/{siteOID}"


def setup_routes(app: web.Application, path_prefix: str = "") -> None:
    p = path_prefix.rstrip("/")
    r = app.router
    for level in (STUDY, SITE):
        r.add_post(p + level + "/participants", participants.add_participant)
        r.add_get(p + level + "/participants", participants.get_participants)
        r.add_delete(p + level + "/participants/{subjectKey}", participants.remove_participant)
        r.add_post(p + level + "/participants/{subjectKey}/restore", participants.restore_participant)

    # The admin API is the service's own, so it lives outside the OC4 prefix.
    r.add_post("/admin/api/studies", admin.create_study)
    r.add_get("/admin/api/studies", admin.list_studies)
    r.add_get("/admin/api/studies/{studyOID}", admin.get_study)
    r.add_patch("/admin/api/studies/{studyOID}", admin.patch_study)
    r.add_post("/admin/api/studies/{studyOID}/sites", admin.create_site)
    r.add_get("/admin/api/studies/{studyOID}/sites", admin.list_sites)
    r.add_patch("/admin/api/studies/{studyOID}/sites/{siteOID}", admin.patch_site)
    r.add_post("/admin/api/users", admin.create_user)
    r.add_get("/admin/api/users", admin.list_users)
    r.add_post("/admin/api/users/{username}/roles", admin.grant_role)
    r.add_get("/admin/api/users/{username}/roles", admin.list_roles)
    r.add_delete("/admin/api/users/{username}/roles", admin.revoke_role)

    for module in (bulk, extracts, jobs, webhooks, ops):
        module.add_routes(r, p)
