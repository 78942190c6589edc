"""The add-participant endpoint stripped to what no aiohttp service can avoid: an aiohttp handler
(uvloop, one process, the service's pool) that reads the JSON body, runs the endpoint's two
statements and answers the new row as JSON. No token, no role rules, no validation, no logging,
no metrics, no error mapping, no encryption: the contact values are stored as plain bytes of the
size their ciphertexts have, with blind indexes of the right size, so Postgres does the same work.

    python -m bench.bare_endpoint --port 8080 --dsn postgresql://...

bench/add_participant.py runs it beside the service: its rate against the pgbench floor is the
ceiling any Python endpoint on this machine can reach; the service's rate against it is what the
product's own work costs. It is a yardstick, never deployed.
"""

from __future__ import annotations

import argparse
from typing import Any

import orjson
import uvloop
from aiohttp import web

from service.core.db import create_pool
from service.core.participants import CONTACT_COLUMNS, INSERT_PARTICIPANT_WITH_AUDIT
from service.core.roles import SCOPE_SQL

POOL = web.AppKey("pool", Any)
FIELDS = list(CONTACT_COLUMNS)[:4]  # the contact fields the benchmark's body sends


INDEX = bytes(16)  # a blind index's size


def _sized(value: str | None) -> bytes | None:
    """``value``'s bytes padded to its ciphertext's size (key id, nonce, tag), not encrypted."""
    return None if value is None else bytes(32) + value.encode()


async def add(request: web.Request) -> web.Response:
    body = orjson.loads(await request.read())
    async with request.app[POOL].acquire() as conn:
        scope = await conn.fetchrow(SCOPE_SQL, "crc", request.match_info["study"], request.match_info["site"])
        row = await conn.fetchrow(
            INSERT_PARTICIPANT_WITH_AUDIT,
            scope["study"]["id"], scope["site"]["id"], body["subjectKey"],
            *(_sized(body.get(f)) for f in ("firstName", "lastName", "emailAddress", "phoneNumber")), None, None,
            INDEX, INDEX, None, None, "", scope["user_id"], "crc", {"fields": FIELDS, "registered": False},
        )  # fmt: skip
    answer = {k: v for k, v in dict(row).items() if isinstance(v, str | int | None)}
    return web.Response(body=orjson.dumps(answer), content_type="application/json")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_endpoint")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--pool", type=int, default=20, help="the service's default DB_POOL_MAX")
    args = parser.parse_args()

    async def open_pool(app: web.Application) -> Any:
        app[POOL] = await create_pool(args.dsn, args.pool, args.pool)
        yield
        await app[POOL].close()

    app = web.Application()
    app.cleanup_ctx.append(open_pool)
    app.router.add_post("/pages/auth/api/clinicaldata/studies/{study}/sites/{site}/participants", add)
    web.run_app(
        app, host="127.0.0.1", port=args.port, print=None, access_log=None, loop=uvloop.new_event_loop()
    )


if __name__ == "__main__":
    main()
