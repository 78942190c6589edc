"""Demo data: one study with two sites, a user for every role, a few participants.

Idempotent: running it again changes nothing. Used by ``participants seed-demo`` and ``make run``.
"""

from __future__ import annotations

import asyncpg

from service.core import directory
from service.core.errors import ApiError
from service.core.protection.fields import STORED, STORED_LIST, keys, stored_values

DEMO_STUDY = "S_DEMO(PROD)"
DEMO_SITES = ("S_SITE_A", "S_SITE_B")

# username, full name, admin, [(site or None for study level, role)]
DEMO_USERS: list[tuple[str, str, bool, list[tuple[str | None, str]]]] = [
    ("admin", "Ada Admin", True, []),
    ("dm", "Dana Manager", False, [(None, "coordinator")]),
    ("crc_a", "Carl Coordinator", False, [("S_SITE_A", "ra")]),
    ("inv_a", "Ines Investigator", False, [("S_SITE_A", "investigator")]),
    ("crc_b", "Bea Coordinator", False, [("S_SITE_B", "ra")]),
    ("crc_ab", "Abe Twosites", False, [("S_SITE_A", "ra"), ("S_SITE_B", "ra")]),
    ("monitor", "Mo Monitor", False, [(None, "monitor")]),
    ("viewer", "Vi Viewer", False, [(None, "viewer")]),
]

DEMO_PARTICIPANTS = [
    ("S_SITE_A", "DEMO-001", "Ann", "O'Neil, Jr.", "ann@example.org", "+1 5550100"),
    ("S_SITE_A", "DEMO-002", "Björn", "Ångström", "bjorn@example.org", "+46 701234567"),
    ("S_SITE_A", "DEMO-003", "=cmd", "Formula", None, None),
    ("S_SITE_B", "DEMO-101", "Chidi", "Okafor", "chidi@example.org", "+234 8031234567"),
]


async def seed_demo(conn: asyncpg.Connection) -> list[str]:
    """Create what is missing of the demo; return the demo usernames."""

    async def ignore_existing(coro: object) -> None:
        try:
            await coro  # type: ignore[misc]
        except ApiError as err:
            if err.code != "alreadyExists":
                raise

    await ignore_existing(
        directory.create_study(
            conn,
            directory.StudyIn(
                oid=DEMO_STUDY, name="Demo Study", participateEnabled=True, expectedTotalEnrollment=1000
            ),
        )
    )
    for oid in DEMO_SITES:
        await ignore_existing(
            directory.create_site(conn, DEMO_STUDY, directory.SiteIn(oid=oid, name=f"Site {oid[-1]}"))
        )
    for username, full_name, admin, roles in DEMO_USERS:
        await ignore_existing(
            directory.create_user(conn, directory.UserIn(username=username, fullName=full_name, admin=admin))
        )
        for site, role in roles:
            await ignore_existing(
                directory.grant_role(
                    conn, username, directory.RoleIn(studyOid=DEMO_STUDY, siteOid=site, role=role)
                )
            )
    study_id = await conn.fetchval("SELECT id FROM studies WHERE oid = $1", DEMO_STUDY)
    ring = keys(conn)
    for site, key, first, last, email, phone in DEMO_PARTICIPANTS:
        values = {"first_name": first, "last_name": last, "email": email, "phone": phone}
        await conn.execute(
            f"""INSERT INTO participants (study_id, site_id, subject_key, oid, {STORED_LIST}, participate_status)
               SELECT $1, s.id, $3, participant_oid($1, $3), {", ".join(f"${i}" for i in range(4, 4 + len(STORED)))}, ''
               FROM sites s WHERE s.oid = $2
               ON CONFLICT DO NOTHING""",
            study_id, site, key, *stored_values(ring, study_id, key, values),
        )  # fmt: skip
    return [u[0] for u in DEMO_USERS]
