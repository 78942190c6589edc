"""Extracting one site's participant contact information: the submit (the use-case the API and the
console both call), the query the worker streams through a cursor, the file's name and object key.
The personal columns are read as ciphertexts; the worker decrypts, guards and quotes each batch
(core/extract_csv.py) exactly as COPY of the plaintext with the SQL guard did.
"""

from __future__ import annotations

import datetime as dt
import uuid
from uuid import UUID

import asyncpg
import orjson

from service.core.connections import Connections
from service.core.extract_csv import Cell
from service.core.extract_options import ExtractOptions
from service.core.files import file_stamp
from service.core.jobs import lifecycle, queue
from service.core.jobs.model import EXTRACT_PARTICIPANTS, NewJob, SubmitAudit
from service.core.jobs.views import JobSubmitted, job_submitted
from service.core.roles import Action, Scope, authorize, load_scope

CSV_HEADER = "ParticipantId,First Name,Last Name,Email,Mobile,Identifier,Access Code,Participate Status"

# One site's extractable participants, in ID order: the participant ID, the participate status,
# the personal columns' ciphertexts and, while the table still has them, their plain columns (rows
# from before encryption). The worker decrypts, guards and quotes (core/extract_csv.py). The WHERE
# clause matches the partial index participants_site_extract_idx exactly.
EXTRACT_SELECT = """
SELECT p.subject_key, p.participate_status, {columns}
FROM participants p
WHERE p.site_id = {site_id} AND p.status IN ('available', 'signed')
ORDER BY p.subject_key
{slice}"""
# The personal columns of the file, in its order (the access code only with the participate info).
FILE_COLUMNS = ("first_name", "last_name", "email", "phone", "identifier", "access_code")
# Which plain personal columns the table still has: asked once per job (a later migration drops them).
PLAIN_COLUMNS_SQL = """
SELECT column_name FROM information_schema.columns
WHERE table_schema = current_schema() AND table_name = 'participants' AND column_name = ANY($1::text[])
"""

# An attempt about to stream: the rows its slice holds (one count of the site's partial index) and
# the phase 'writing', written in one statement, so the status knows the total from the start.
# $3 site, $4 page size (NULL: all), $5 offset, $6 page number (ExtractOptions.rows_in_slice in
# SQL), $7 ESTIMATE_ABOVE. When the whole table holds more than that (pg_class's estimate), the
# count is skipped (a one-time filter: no scan) and the statement answers big = true, nothing set.
START_WRITING_SQL = """
WITH big AS (
    SELECT coalesce((SELECT reltuples FROM pg_class WHERE oid = 'participants'::regclass), 0) > $7 AS yes
), c AS (
    SELECT count(*) AS n FROM participants p
    WHERE p.site_id = $3 AND p.status IN ('available', 'signed') AND NOT (SELECT yes FROM big)
), written AS (
    UPDATE jobs j SET phase = 'writing', heartbeat_at = now(), rows_done = 0, rows_estimated = false,
        rows_expected = CASE WHEN $4::bigint IS NULL THEN (CASE WHEN $6::bigint = 1 THEN c.n ELSE 0 END)
                             ELSE greatest(0, least($4::bigint, c.n - $5::bigint)) END
    FROM c
    WHERE j.uuid = $1 AND j.attempts = $2 AND j.status = 'IN_PROGRESS' AND NOT (SELECT yes FROM big)
    RETURNING j.rows_expected
)
SELECT (SELECT yes FROM big) AS big, (SELECT rows_expected FROM written) AS rows_expected
"""
# Past this many rows (the planner's estimate for the site) the count would cost a noticeable part
# of the extract itself (about 70 ms per 300,000 rows here, some 8 % of the COPY): the planner's
# estimate stands in, labelled as one (rows_estimated), until the job ends with the exact count.
# Only a table past this size can hold such a site, so smaller ones count in one round trip.
ESTIMATE_ABOVE = 1_000_000
PLANNED_ROWS_SQL = "EXPLAIN (FORMAT JSON) SELECT 1 FROM participants p WHERE p.site_id = {site_id} AND p.status IN ('available', 'signed')"
ESTIMATED_SQL = """
UPDATE jobs SET phase = 'writing', heartbeat_at = now(), rows_done = 0, rows_expected = $3, rows_estimated = $4
WHERE uuid = $1 AND attempts = $2 AND status = 'IN_PROGRESS'
"""
COUNT_SQL = "SELECT count(*) FROM participants p WHERE p.site_id = $1 AND p.status IN ('available', 'signed')"


async def start_writing(
    conn: asyncpg.Connection, job_uuid: UUID, attempt: int, site_id: int, options: ExtractOptions
) -> tuple[int | None, bool]:
    """Record the attempt's expected rows with the phase 'writing': (the rows, whether an estimate).
    A count, or for a site the planner puts past ``ESTIMATE_ABOVE`` rows, its estimate."""
    row = await conn.fetchrow(
        START_WRITING_SQL, job_uuid, attempt, site_id, options.page_size, options.offset, options.page_number,
        float(ESTIMATE_ABOVE),
    )  # fmt: skip
    assert row is not None
    if not row["big"]:
        return row["rows_expected"], False
    plan = await conn.fetchval(PLANNED_ROWS_SQL.format(site_id=int(site_id)))
    planned = int((orjson.loads(plan) if isinstance(plan, str | bytes) else plan)[0]["Plan"]["Plan Rows"])
    estimated = planned > ESTIMATE_ABOVE
    total = planned if estimated else int(await conn.fetchval(COUNT_SQL, site_id))
    expected = options.rows_in_slice(total)
    await conn.execute(ESTIMATED_SQL, job_uuid, attempt, expected, estimated)
    return expected, estimated


async def plain_columns(conn: asyncpg.Connection) -> frozenset[str]:
    """The plain personal columns ``participants`` still has (none on a database made after they
    were dropped)."""
    return frozenset(r[0] for r in await conn.fetch(PLAIN_COLUMNS_SQL, list(FILE_COLUMNS)))


def extract_select(
    site_id: int, options: ExtractOptions = ExtractOptions(), plain: frozenset[str] = frozenset()
) -> tuple[str, list[Cell]]:
    """The SELECT for one site and where each personal column sits in its records. The id and the
    slice are formatted in (integers only), so each job's plan is made for its own site and slice;
    ``plain``: the plain columns to read too (``plain_columns``)."""
    personal = FILE_COLUMNS if options.include_participate else FILE_COLUMNS[:-1]
    columns = [f"p.{c}_ct" for c in personal]
    cells = []
    for n, column in enumerate(personal):
        plain_index = None
        if column in plain:
            plain_index = 2 + len(columns)
            columns.append(f"p.{column}")
        cells.append(Cell(2 + n, plain_index, column.encode(), phone=column == "phone"))
    sql = EXTRACT_SELECT.format(columns=", ".join(columns), site_id=int(site_id), slice=options.slice_sql())
    return sql, cells


def extract_file_name(study_oid: str, site_oid: str, at: dt.datetime) -> str:
    """OC4's name: ``{studyOID}-{siteOID}_Participant Access Code_{yyyy-MM-dd-HHmmssSSS}Z.csv`` (UTC)."""
    return f"{study_oid}-{site_oid}_Participant Access Code_{file_stamp(at)}Z.csv"


def extract_object_key(job_uuid: UUID) -> str:
    return f"extracts/{job_uuid}.csv"


async def extract_scope(conn: asyncpg.Connection, username: str, study_oid: str, site_oid: str) -> Scope:
    """Who may extract: only a site-level CRC (``ra``) or investigator at that site; one site a call."""
    scope = await load_scope(conn, username, study_oid, site_oid)
    authorize(scope, Action.EXTRACT)
    return scope


async def submit_extract(
    conns: Connections, conn: asyncpg.Connection, scope: Scope, options: ExtractOptions, base_url: str
) -> JobSubmitted:
    """Create the extract job for ``scope`` (from ``extract_scope``) and hand it to the extract queue.
    One statement, its own transaction: the job, its audit row and the owner's quota check; then the
    enqueue, which withdraws the job if Redis cannot take it (the caller answers 503)."""
    assert scope.study is not None and scope.site is not None and scope.user_id is not None
    assert scope.site_oid is not None
    job_uuid = uuid.uuid4()
    job = await lifecycle.create_job(
        conn,
        NewJob(
            job_type=EXTRACT_PARTICIPANTS,
            study_id=scope.study["id"],
            site_id=scope.site["id"],
            owner_id=scope.user_id,
            file_name=extract_file_name(scope.study_oid, scope.site_oid, dt.datetime.now(dt.UTC)),
            object_key=extract_object_key(job_uuid),
            # baseUrl: the job API's base, for the absolute URLs of its webhook event.
            params={
                "studyOid": scope.study_oid,
                "siteOid": scope.site_oid,
                "baseUrl": base_url,
                **options.to_params(),
            },
            job_uuid=job_uuid,
            max_active=conns.settings.max_active_jobs_per_user,
            audit=SubmitAudit(scope.username, "extract.submit"),
        ),
    )
    await queue.enqueue_or_withdraw(
        conn, conns.redis, conns.settings, EXTRACT_PARTICIPANTS, job_uuid, scope.user_id
    )
    return job_submitted(job_uuid, job["status"], base_url)
