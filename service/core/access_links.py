"""Participate access links: the portal's URL with the participant's access code, as OC4 builds
them (`ParticipantAccessDTO`: `{accessCode, host, accessLink}`, the link `host + "/?accessCode=" +
code`). The portal is one per deployment here (`PARTICIPANTS_PARTICIPATE_URL`); OC4 reads it from
the study's Participate module configuration."""

from __future__ import annotations

from urllib.parse import quote

from pydantic import BaseModel

from service.core.errors import ApiError
from service.settings import Settings


class AccessLink(BaseModel):
    accessCode: str | None = None
    host: str
    accessLink: str


def portal_host(settings: Settings) -> str:
    """The configured portal URL without a trailing slash, or 409 when none is configured."""
    if not settings.participate_url:
        raise ApiError("participateUrlNotConfigured")
    return settings.participate_url.rstrip("/")


def access_link(settings: Settings, access_code: str, *, include_code: bool = True) -> AccessLink:
    """The link a participant follows to sign in to the portal.

    Without ``include_code`` the answer holds no secret: no ``accessCode`` and a link to the
    portal's sign-in page (OC4 sends ``.../?accessCode=null`` there, a link that cannot work).
    """
    host = portal_host(settings)
    if not include_code:
        return AccessLink(host=host, accessLink=f"{host}/")
    link = f"{host}/?accessCode={quote(access_code, safe='')}"
    return AccessLink(accessCode=access_code, host=host, accessLink=link)
