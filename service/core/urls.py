"""Where things are on the wire: OC4's path prefix and the URLs clients are given.

The one place for these strings: the router, the job views, the bulk and extract submit replies and
the webhook payloads all build their URLs here.
"""

from __future__ import annotations

from uuid import UUID

OC4_API = "/pages/auth/api"  # OC4's own prefix, under PARTICIPANTS_PATH_PREFIX
STUDY_PATH = OC4_API + "/clinicaldata/studies/{studyOID}"
SITE_PATH = STUDY_PATH + "/sites/{siteOID}"
JOBS_PATH = OC4_API + "/jobs"
ADMIN_API = "/admin/api"  # the service's own admin API, outside the OC4 prefix
# OC4's user-service token call: at the host root, beside the OC4 prefix (as OC4 serves it).
TOKEN_PATH = "/user-service/api/oauth/token"


def oc4_base(public_url: str, path_prefix: str) -> str:
    """The base every OC4 URL hangs from: scheme and host (``public_url``) plus the path prefix."""
    return public_url.rstrip("/") + path_prefix.rstrip("/")


def job_urls(base_url: str, job_uuid: UUID | str) -> tuple[str, str]:
    """A job's status URL and its file's download URL."""
    status_url = f"{base_url}{JOBS_PATH}/{job_uuid}"
    return status_url, status_url + "/downloadFile"
