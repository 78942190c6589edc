"""The API tells the truth about itself: a 405 names the allowed methods, a NUL in the query string
is refused only after the access checks on every authenticated route, names with control characters
are refused, and the document declares what the routes answer."""

from __future__ import annotations

import re
from uuid import uuid4

from service.web.apidoc import declared
from tests.world import SITE_A, STUDY, expect

NUL = "?x=%00"


def _concrete(path: str) -> str:
    values = {"studyOID": STUDY, "siteOID": SITE_A, "subjectKey": "P1", "jobUuid": str(uuid4()), "id": "1",
              "deliveryId": "1", "username": "dm"}  # fmt: skip
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)].replace("(", "%28").replace(")", "%29"), path)


def _routes(app):
    for route in app.router.routes():
        if route.method in ("HEAD", "OPTIONS") or route.resource is None:
            continue
        if "/console" in route.resource.canonical:
            continue  # the console's pages answer with pages and redirects; tests/test_console.py covers them
        yield route.method, route.resource.canonical, declared(route.handler)


async def test_405_names_the_allowed_methods(client):
    resp = await client.put("/admin/api/studies")
    got = await expect(resp, 405)
    assert got["message"] == "errorCode.methodNotAllowed"
    assert set(resp.headers["Allow"].split(",")) == {"GET", "HEAD", "POST"}  # HEAD wherever GET


async def test_nul_in_query_comes_after_the_access_checks_on_every_route(client, world):
    await world.standard()
    refused = []
    for method, path, op in _routes(client.app):
        url = _concrete(path) + NUL
        if op.public:
            resp = await client.request(method, url)
            assert resp.status == 400, (method, path)
            continue
        # Who first: without a token, 401 whatever the query says.
        resp = await client.request(method, url)
        assert resp.status == 401, (method, path, resp.status)
        # Then the role: a study coordinator is no admin; a site CRC acts at its site, a study
        # coordinator at study level and erases anywhere (the data manager's alone).
        study_level = "{siteOID}" not in path or path.endswith("/erase")
        who = "dm" if path.startswith("/admin/") or study_level else "crc_a"
        if "/jobs/{jobUuid}" in path and not path.startswith("/admin/"):
            continue  # someone else's (here: nobody's) job is 404 invalidUuid before the query is looked at
        resp = await client.request(method, url, headers=world.auth(who))
        if path.startswith("/admin/"):
            assert resp.status == 403, (method, path, resp.status)
            resp = await client.request(method, url, headers=world.auth("admin"))
        body = await resp.json()
        assert (resp.status, body["message"]) == (400, "errorCode.invalidParameter"), (method, path, body)
        refused.append(path)
    assert len(refused) > 30


async def test_nul_in_query_with_an_unknown_study_is_404_first(client, world):
    await world.standard()
    url = "/pages/auth/api/clinicaldata/studies/NOPE/participants" + NUL
    got = await expect(await client.get(url, headers=world.auth("dm")), 404)
    assert got["message"] == "errorCode.studyNotExist"


async def test_control_characters_refused_in_study_and_site_names(client, world):
    await world.standard()
    admin = world.auth("admin")
    for name in ("a\nb", "tab\there", "bell\u0007", "del\u007f"):
        got = await expect(
            await client.post("/admin/api/studies", json={"oid": "S_CTL", "name": name}, headers=admin), 400
        )
        assert got["message"] == "errorCode.invalidRequestBody"
        got = await expect(
            await client.patch(f"/admin/api/studies/{STUDY}", json={"name": name}, headers=admin), 400
        )
        assert got["message"] == "errorCode.invalidRequestBody"
        got = await expect(await client.post(f"/admin/api/studies/{STUDY}/sites", json={"oid": "S_CTL2", "name": name},
                                             headers=admin), 400)  # fmt: skip
        got = await expect(await client.patch(f"/admin/api/studies/{STUDY}/sites/{SITE_A}", json={"name": name},
                                              headers=admin), 400)  # fmt: skip
    await expect(
        await client.post("/admin/api/studies", json={"oid": "S_OK", "name": "Ünïcode ok"}, headers=admin),
        201,
    )


async def test_document_declares_statuses_links_and_strict_requests(client):
    doc = await expect(await client.get("/openapi.json"), 200)
    ops = {op["operationId"]: op for path in doc["paths"].values() for op in path.values()}
    add = ops["addParticipantSite"]
    assert {"400", "401", "403", "404", "409", "413", "415", "503"} <= set(add["responses"])
    assert "4XX" not in add["responses"]
    assert add["responses"]["401"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"
    }
    links = add["responses"]["200"]["links"]
    assert links["remove"]["operationId"] == "removeParticipantSite"
    assert links["restore"]["parameters"]["subjectKey"] == "$response.body#/subjectKey"
    extract = ops["extractGet"]["responses"]["200"]["links"]
    assert {link["operationId"] for link in extract.values()} == {"getJob", "downloadFile", "deleteJob"}
    assert "410" in ops["downloadFile"]["responses"] and "416" in ops["downloadFile"]["responses"]
    assert "429" in ops["token"]["responses"]
    assert "Retry-After" in ops["token"]["responses"]["429"]["headers"]
    status = next(p for p in ops["adminListJobs"]["parameters"] if p["name"] == "status")
    assert "COMPLETED" in status["schema"]["enum"]
    study = doc["components"]["schemas"]["StudyIn-Input"] if "StudyIn-Input" in doc["components"]["schemas"] else (
        doc["components"]["schemas"]["StudyIn"])  # fmt: skip
    assert set(study["required"]) == {"oid", "name"}
    assert "pattern" in study["properties"]["name"]
    bulk = ops["bulkUploadSite"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert bulk["required"] == ["file"]


async def test_docs_page_with_a_trailing_slash(client):
    for path in ("/docs", "/docs/"):
        resp = await client.get(path)
        assert resp.status == 200
        page = await resp.text()
        assert 'spec-url="/openapi.json"' in page and 'src="/docs/redoc.standalone.js"' in page
