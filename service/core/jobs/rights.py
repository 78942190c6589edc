"""What a job's owner must still hold, at the job's study and site, to see its status and file, and
for an extract to start: the right that created it (a bulk result needs a role there). A role
revoked, a user disabled or unknown ends access to what the role made."""

from __future__ import annotations

from service.core.jobs.model import BULK_ADD_PARTICIPANTS, EXTRACT_PARTICIPANTS
from service.core.roles import ALLOWED, Action

RIGHT_FOR_TYPE = {EXTRACT_PARTICIPANTS: Action.EXTRACT, BULK_ADD_PARTICIPANTS: Action.LIST}


def _owner_holds_right_sql() -> str:
    """Whether a job's owner still holds the right that made it, as an SQL condition on ``jobs j``:
    the owner is not disabled and has a role at the job's study and site that ``roles.authorize``
    allows ``RIGHT_FOR_TYPE`` there. Written from the same allow table (roles.ALLOWED) and the
    same rule for a study-level LIST (any role in the study); tests/test_access_revoked.py checks
    that it agrees with ``authorize`` for every role and level. As SQL, a list filters by it in its
    one query (paging counts only what is shown) and a claim or a lookup reads it with the row."""

    def roles(names: frozenset[str]) -> str:
        return (
            "ARRAY[" + ", ".join(f"'{n}'" for n in sorted(names)) + "]::text[]"
            if names
            else "ARRAY[]::text[]"
        )

    cases = []
    for job_type, action in sorted(RIGHT_FOR_TYPE.items()):
        at_study, at_site = ALLOWED[action]
        held = (
            f"(r.site_id IS NULL AND r.role = ANY({roles(at_study)}))"
            f" OR (r.site_id = j.site_id AND r.role = ANY({roles(at_site)}))"
        )
        if action is Action.LIST:
            held += " OR j.site_id IS NULL"  # at study level any role in the study may list
        cases.append(
            f"WHEN '{job_type}' THEN EXISTS (SELECT 1 FROM role_assignments r"
            f" WHERE r.user_id = j.owner_id AND r.study_id = j.study_id AND ({held}))"
        )
    return f"(NOT (SELECT disabled FROM users WHERE id = j.owner_id) AND CASE j.type {' '.join(cases)} ELSE true END)"


OWNER_HOLDS_RIGHT_SQL = _owner_holds_right_sql()
