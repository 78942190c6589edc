"""No input gives a 5xx: malformed JSON, wrong types, huge strings, non-UTF-8, odd paths and queries."""

from __future__ import annotations

import pytest

from tests.world import SITE_A, STUDY, expect

SITE_URL = f"/pages/auth/api/clinicaldata/studies/{STUDY}/sites/{SITE_A}/participants"

BODIES: dict[str, bytes] = {
    "truncated": b'{"subjectKey": "A',
    "array": b'[{"subjectKey": "A"}]',
    "string": b'"A"',
    "number": b"42",
    "null": b"null",
    "non_utf8": b'{"subjectKey": "\xff\xfe"}',
    "latin1": '{"subjectKey": "Müller"}'.encode("latin-1"),
    "lone_surrogate": b'{"subjectKey": "\\ud800"}',
    "nan": b'{"subjectKey": NaN}',
    "wrong_type_int": b'{"subjectKey": 123}',
    "wrong_type_list": b'{"subjectKey": ["A"]}',
    "wrong_type_object": b'{"firstName": {"a": 1}, "subjectKey": "A"}',
    "bool": b'{"subjectKey": true}',
    "deep": b"[" * 100_000 + b"]" * 100_000,
    "nul_in_key": b'{"subjectKey": "A\\u0000B"}',
    "nul_in_name": b'{"subjectKey": "A", "firstName": "x\\u0000y"}',
    "newline_in_name": b'{"subjectKey": "A", "lastName": "x\\ny"}',
    "huge_key": b'{"subjectKey": "' + b"K" * 500_000 + b'"}',
    "huge_email": b'{"subjectKey": "A", "emailAddress": "' + b"e" * 500_000 + b'@x.org"}',
}


@pytest.mark.parametrize("name", sorted(BODIES))
async def test_bad_bodies_get_a_4xx_code(client, world, pool, name):
    await world.standard()
    resp = await client.post(
        SITE_URL, data=BODIES[name], headers={**world.auth("dm"), "Content-Type": "application/json"}
    )
    body = await resp.json()
    assert 400 <= resp.status < 500, (resp.status, body)
    assert body["message"].startswith("errorCode.")
    assert await pool.fetchval("SELECT count(*) FROM participants") == 0


async def test_body_over_the_limit_is_413(client, world):
    await world.standard()
    resp = await client.post(
        SITE_URL,
        data=b'{"subjectKey": "' + b"K" * 2_000_000 + b'"}',
        headers={**world.auth("dm"), "Content-Type": "application/json"},
    )
    assert (await expect(resp, 413))["message"] == "errorCode.fileTooLarge"


async def test_empty_body_is_participant_id_empty(client, world):
    await world.standard()
    got = await expect(
        await client.post(
            SITE_URL, data=b"", headers={**world.auth("dm"), "Content-Type": "application/json"}
        ),
        400,
    )
    assert got["message"] == "errorCode.participantIDEmpty"
    got = await expect(await client.post(SITE_URL, headers=world.auth("dm")), 400)  # no body, no type
    assert got["message"] == "errorCode.participantIDEmpty"


@pytest.mark.parametrize(
    "ctype",
    ["application/xml", "text/plain", "application/x-www-form-urlencoded", "application/octet-stream"],
)
async def test_a_body_that_is_not_json_is_415(client, world, pool, ctype):
    await world.standard()
    got = await expect(
        await client.post(
            SITE_URL, data=b'{"subjectKey": "X"}', headers={**world.auth("dm"), "Content-Type": ctype}
        ),
        415,
    )
    assert got["message"] == "errorCode.unsupportedMediaType"
    assert await pool.fetchval("SELECT count(*) FROM participants") == 0
    await expect(
        await client.post(
            SITE_URL,
            data=b'{"subjectKey": "X"}',
            headers={**world.auth("dm"), "Content-Type": "application/json; charset=utf-8"},
        ),
        200,
    )


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_body_that_does_not_decode_is_400(client, world, encoding):
    await world.standard()
    headers = {**world.auth("dm"), "Content-Type": "application/json", "Content-Encoding": encoding}
    got = await expect(await client.post(SITE_URL, data=b"notcompressed", headers=headers), 400)
    assert got["message"] == "errorCode.invalidRequestBody"


@pytest.mark.parametrize(
    "path",
    [
        "/pages/auth/api/clinicaldata/studies/%00/sites/%FF/participants",
        "/pages/auth/api/clinicaldata/studies/" + "S" * 5000 + "/participants",
        "/pages/auth/api/clinicaldata/studies/%E2%80%AE/participants",
        f"/pages/auth/api/clinicaldata/studies/{STUDY}/sites/{SITE_A}/participants/%00",
        f"/pages/auth/api/clinicaldata/studies/{STUDY}/sites/{SITE_A}/participants/" + "k" * 3000,
    ],
)
async def test_odd_paths_are_4xx(client, world, path):
    await world.standard()
    for method in ("GET", "POST", "DELETE"):
        resp = await client.request(method, path, json={"subjectKey": "A"}, headers=world.auth("dm"))
        assert 400 <= resp.status < 500, (method, resp.status, await resp.text())


@pytest.mark.parametrize(
    "query", ["?page=0", "?page=x", "?pageSize=100000", "?pageSize=-1", "?page=99999999999999999999"]
)
async def test_bad_paging_is_400(client, world, query):
    await world.standard()
    got = await expect(await client.get(SITE_URL + query, headers=world.auth("dm")), 400)
    assert got["message"] == "errorCode.invalidParameter"


async def test_unknown_route_and_method_are_json(client):
    got = await expect(await client.get("/no/such/thing"), 404)
    assert got == {"message": "errorCode.notFound", "params": {}}
    got = await expect(await client.put(SITE_URL), 405)
    assert got["message"] == "errorCode.methodNotAllowed"


async def test_request_id_is_echoed_or_made(client, world):
    await world.standard()
    resp = await client.get(SITE_URL, headers={**world.auth("dm"), "X-Request-ID": "abc-123"})
    assert resp.headers["X-Request-ID"] == "abc-123"
    resp = await client.get(SITE_URL, headers={**world.auth("dm"), "X-Request-ID": "bad\u00e9id"})
    assert len(resp.headers["X-Request-ID"]) == 32


async def test_nul_in_query_is_400(client, world):
    await world.standard()
    got = await expect(await client.get(SITE_URL + "?page=%00", headers=world.auth("dm")), 400)
    assert got["message"] == "errorCode.invalidParameter"


async def test_nul_anywhere_in_a_json_body_is_400(client, world):
    await world.standard()
    admin = world.auth("admin")
    got = await expect(
        await client.post(
            "/admin/api/studies",
            data=b'{"oid": "S_N", "name": "a\\u0000b"}',
            headers={**admin, "Content-Type": "application/json"},
        ),
        400,
    )
    assert got == {"message": "errorCode.invalidRequestBody", "params": {"fields": ["name"]}}
    # A literal backslash-u text is not a NUL and is accepted.
    await expect(
        await client.post(
            "/admin/api/studies",
            data=b'{"oid": "S_N", "name": "a\\\\u0000b"}',
            headers={**admin, "Content-Type": "application/json"},
        ),
        201,
    )
