"""Who may do what: the allow table of contract.md, implemented once.

``load_scope`` reads, in one query, the caller (and when their credentials last changed), the
study, the site and the caller's roles in that study; ``authorize`` applies OC4's check order to it and raises the first error that applies.
The rules are plain functions of plain data so they can be tested without a server.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import asyncpg

from service.core.errors import ApiError

ALL_ROLES = frozenset({"coordinator", "director", "investigator", "ra", "ra2", "monitor", "viewer"})
WRITERS = frozenset({"coordinator", "investigator", "ra"})
# Who may see a participant's contact data and access code: OC4's CRC, investigator, data manager
# and data entry roles (ValidateService's CRC_INV_DM_DEP_DS check); never monitors, viewers or the
# study director, who see a participant without them.
CONTACT_READERS_AT_SITE = WRITERS | {"ra2"}


# Why a token was refused, as ``params.reason`` of the 401 and RFC 6750's ``error_description``.
TOKEN_REFUSALS = {
    "expired": "the token has expired",
    "invalid": "the token is malformed, not signed by a trusted key, or not for this service",
    "revoked": "the user's credentials changed after the token was issued: sign in again",
}


def token_refused(reason: str) -> ApiError:
    """The 401 for a bearer token that was sent but is not accepted (RFC 6750 ``invalid_token``)."""
    header = f'Bearer error="invalid_token", error_description="{TOKEN_REFUSALS[reason]}"'
    return ApiError("unauthenticated", {"reason": reason}, headers={"WWW-Authenticate": header})


class Identity(str):
    """The name a verified bearer token carries, as the plain ``str`` every use-case takes, with
    when the token was issued (``issued_at``, Unix seconds). The one lookup of the user
    (``active_user``, ``core.roles.load_scope``) refuses it as ``revoked`` when the user's
    credentials changed after that, so the check costs no query of its own."""

    issued_at: float

    def __new__(cls, name: str, issued_at: float) -> Identity:
        identity = super().__new__(cls, name)
        identity.issued_at = issued_at
        return identity


def issued_before_epoch(issued_at: float, credentials_changed_at: float | None) -> bool:
    """True when a token issued at ``issued_at`` predates the user's last credentials change. A
    token's ``iat`` has whole seconds: one issued in the very second of the change counts as
    after it (else a sign-in right after a password reset would be refused for up to a second)."""
    return credentials_changed_at is not None and issued_at < math.floor(credentials_changed_at)


def check_token_epoch(username: str, credentials_changed_at: float | None) -> None:
    """Raise 401 ``revoked`` when ``username`` is a token's ``Identity`` issued before the epoch."""
    if isinstance(username, Identity) and issued_before_epoch(username.issued_at, credentials_changed_at):
        raise token_refused("revoked")


class Action(Enum):
    WRITE_AT_SITE = "write_at_site"  # add/update/remove/restore/bulk at a site
    WRITE_AT_STUDY = "write_at_study"  # add/update/bulk at study level
    LIST = "list"
    EXTRACT = "extract"
    READ_CONTACT = "read_contact"  # one participant's contact data and access code
    ERASE = "erase"  # destroy one participant's personal data for good (docs/erasure.md)


# action -> (roles allowed when held at study level, roles allowed when held at the site)
ALLOWED: dict[Action, tuple[frozenset[str], frozenset[str]]] = {
    Action.WRITE_AT_SITE: (WRITERS, WRITERS),
    Action.WRITE_AT_STUDY: (WRITERS, frozenset()),
    Action.LIST: (ALL_ROLES, ALL_ROLES),
    Action.EXTRACT: (frozenset(), frozenset({"ra", "investigator"})),
    Action.READ_CONTACT: (WRITERS, CONTACT_READERS_AT_SITE),
    # OC4's data manager (the study-level coordinator) alone, besides the service's admins: an
    # erasure cannot be undone, and a site's staff ask the data manager for it.
    Action.ERASE: (frozenset({"coordinator"}), frozenset()),
}

# Actions that change participants need the study (and site) to be 'available'.
WRITES = {Action.WRITE_AT_SITE, Action.WRITE_AT_STUDY}


@dataclass(frozen=True)
class Scope:
    """The caller, the study and site named in the path, and the caller's roles in that study."""

    user_id: int | None
    username: str
    full_name: str
    study: dict[str, Any] | None  # the studies row, or None when the OID names no study
    site: dict[str, Any] | None
    study_oid: str
    site_oid: str | None
    study_roles: frozenset[str] = frozenset()
    # Site id -> roles there: every site of the study for a study-level path, only the path's site
    # for a site-level one (nothing else is asked there).
    site_roles: dict[int, frozenset[str]] = field(default_factory=dict)

    def roles_at(self, site_id: int | None) -> frozenset[str]:
        """Roles that reach ``site_id`` (None: the study level itself)."""
        if site_id is None:
            return self.study_roles
        return self.study_roles | self.site_roles.get(site_id, frozenset())

    def may(self, action: Action, site_id: int | None) -> bool:
        at_study, at_site = ALLOWED[action]
        if action is Action.LIST and site_id is None:
            # Any role in the study may list at study level; site roles then see their sites only.
            return bool(self.study_roles or self.site_roles)
        if self.study_roles & at_study:
            return True
        return site_id is not None and bool(self.site_roles.get(site_id, frozenset()) & at_site)

    def sees(self, site_id: int | None) -> bool:
        """Whether the caller may see a participant at ``site_id`` at all (None: a study-level
        participant, which only study-level roles see)."""
        visible = self.visible_site_ids()
        return visible is None or (site_id is not None and site_id in visible)

    def sites_allowed(self, action: Action) -> list[int] | None:
        """Sites where the caller may do ``action``: None means every site of the study (a role held
        at study level allows it), else the ids of the sites whose roles allow it."""
        at_study, at_site = ALLOWED[action]
        if self.study_roles & at_study:
            return None
        return sorted(site for site, roles in self.site_roles.items() if roles & at_site)

    def visible_site_ids(self) -> list[int] | None:
        """Sites whose participants the caller may list: None means all (a study-level role)."""
        if self.study_roles:
            return None
        return sorted(self.site_roles)

    @property
    def params(self) -> dict[str, Any]:
        p: dict[str, Any] = {"studyOid": self.study_oid}
        if self.site_oid is not None:
            p["siteOid"] = self.site_oid
        return p


SCOPE_SQL = """
SELECT u.id AS user_id, u.full_name,
       date_part('epoch', u.credentials_changed_at) AS credentials_changed_at,
       to_jsonb(st) AS study, to_jsonb(si) AS site,
       -- At a site, the roles of other sites play no part: a CTMS user with a role at each of
       -- hundreds of sites would otherwise carry them all into every request.
       (SELECT coalesce(jsonb_agg(jsonb_build_array(r.role, r.site_id)), '[]'::jsonb)
          FROM role_assignments r WHERE r.user_id = u.id AND r.study_id = st.id
           AND (si.id IS NULL OR r.site_id IS NULL OR r.site_id = si.id)) AS roles
FROM (SELECT 1) one
LEFT JOIN users u ON u.username = $1 AND NOT u.disabled  -- a disabled user is no one here
LEFT JOIN studies st ON st.oid = $2
LEFT JOIN sites si ON si.oid = $3
"""


async def load_scope(conn: asyncpg.Connection, username: str, study_oid: str, site_oid: str | None) -> Scope:
    """The caller (``username``, a token's ``Identity`` on the API: 401 ``revoked`` when issued
    before the user's credentials changed), the study, the site and the caller's roles there."""
    row = await conn.fetchrow(SCOPE_SQL, username, study_oid, site_oid)
    assert row is not None
    check_token_epoch(username, row["credentials_changed_at"])
    study_roles: set[str] = set()
    site_roles: dict[int, set[str]] = {}
    for role, site_id in row["roles"]:
        if site_id is None:
            study_roles.add(role)
        else:
            site_roles.setdefault(site_id, set()).add(role)
    return Scope(
        user_id=row["user_id"],
        username=username,
        full_name=row["full_name"] or "",
        study=row["study"],
        site=row["site"],
        study_oid=study_oid,
        site_oid=site_oid,
        study_roles=frozenset(study_roles),
        site_roles={k: frozenset(v) for k, v in site_roles.items()},
    )


def authorize(scope: Scope, action: Action) -> None:
    """Raise the first error of OC4's check order that applies, or return if the caller may act.

    Order: unknown user, study exists, site exists and belongs to the study, study available,
    site available (writes only), a role there, a role allowed there.
    """
    if scope.user_id is None:
        # A valid token for someone this service does not know: no role anywhere.
        raise ApiError("noRoleSetUp", scope.params)
    study = scope.study
    if study is None:
        raise ApiError("studyNotExist", scope.params)
    site = scope.site
    if scope.site_oid is not None and (site is None or site["study_id"] != study["id"]):
        raise ApiError("siteNotExist", scope.params)
    if action in WRITES:
        if study["status"] != "available":
            raise ApiError("studyNotAvailable", scope.params)
        if site is not None and site["status"] != "available":
            raise ApiError("siteNotAvailable", scope.params)
    site_id = site["id"] if site is not None else None
    if site_id is not None:
        has_role = bool(scope.roles_at(site_id))
    else:
        # At study level any role in the study counts as "a role here": a site-level CRC asking for
        # a study-level operation has a role, just not a sufficient one.
        has_role = bool(scope.study_roles or scope.site_roles)
    if not has_role:
        raise ApiError("noRoleSetUp", scope.params)
    if not scope.may(action, site_id):
        raise ApiError("noSufficientPrivileges", scope.params)


def check_bulk_allowed(scope: Scope) -> None:
    """Bulk has the rights of the single add at that level, and needs manual participant IDs."""
    authorize(scope, Action.WRITE_AT_SITE if scope.site_oid is not None else Action.WRITE_AT_STUDY)
    assert scope.study is not None
    if scope.study["participant_id_method"] == "system_generated":
        raise ApiError("bulkUploadNotSupportSystemGeneratedSetting", scope.params)


def check_register_allowed(scope: Scope, register: bool) -> None:
    """``register=y`` needs Participate on in the study (checked before any file is read)."""
    if register and scope.study is not None and not scope.study["participate_enabled"]:
        raise ApiError("participateNotEnabled", scope.params)


# OC4's names for the roles, as its screens show them: some differ between the study and a site.
ROLE_NAMES_AT_STUDY = {
    "coordinator": "Data Manager",
    "director": "Study Director",
    "investigator": "Data Specialist",
    "ra": "Data Entry Person",
    "ra2": "Data Entry Person",
    "monitor": "Monitor",
    "viewer": "Viewer",
}
ROLE_NAMES_AT_SITE = {
    **ROLE_NAMES_AT_STUDY,
    "investigator": "Investigator",
    "ra": "Clinical Research Coordinator",
}


def role_name(role: str, at_site: bool) -> str:
    """A role by OC4's name for it at that level (``ra`` at a site is a Clinical Research Coordinator)."""
    return (ROLE_NAMES_AT_SITE if at_site else ROLE_NAMES_AT_STUDY).get(role, role)
