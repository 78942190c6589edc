"""The console as a sub-app: its own HTML error pages (never the API's JSON), the security headers
on every answer, links built from route names, the session store on the parent's Redis pool, and
a route table in which every form is CSRF-checked and every operator page needs the admin flag."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import pytest
from aiohttp import web

from service.core import directory
from service.web.app import create_app
from service.web.console.guard import ACCESS, SESSIONS
from service.web.console.render import SECURITY_HEADERS, console_url
from service.web.console.routes import ROUTES
from service.web.resources import REDIS
from tests.console_helpers import give_password, page_csrf, sign_in
from tests.world import SITE_A, STUDY

CONSOLE = Path(__file__).resolve().parent.parent / "service" / "web" / "console"


def console_app(app: web.Application) -> web.Application:
    [sub] = [r.get_info()["app"] for r in app.router.resources() if "app" in r.get_info()]
    return sub


def assert_security_headers(resp) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert resp.headers.get(name) == value, (name, resp.headers.get(name))


async def test_an_unknown_console_path_is_an_html_404_page(client, world, pool):
    await world.standard()
    await give_password(pool, "crc_a")
    for signed_in in (False, True):
        if signed_in:
            await sign_in(client, "crc_a")
        resp = await client.get("/console/no/such/page", allow_redirects=False)
        assert resp.status == 404 and resp.content_type == "text/html", signed_in
        assert "There is no such page." in await resp.text()
        assert_security_headers(resp)
    # Outside the console the API's JSON answer is unchanged.
    resp = await client.get("/consolex")
    assert resp.status == 404 and (await resp.json())["message"] == "errorCode.notFound"


async def test_a_wrong_method_is_an_html_405_page_naming_the_allowed_ones(client):
    resp = await client.put("/console/login")
    assert resp.status == 405 and resp.content_type == "text/html"
    assert set(resp.headers["Allow"].split(",")) == {"GET", "POST"}
    assert_security_headers(resp)


async def test_no_session_is_a_redirect_for_a_page_and_a_401_page_otherwise(client):
    resp = await client.get(f"/console/studies/{STUDY}/sites/{SITE_A}", allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/console/login"
    assert_security_headers(resp)
    fragment = await client.get(
        f"/console/studies/{STUDY}/sites/{SITE_A}/jobs", headers={"X-Console-Fragment": "1"}
    )
    assert fragment.status == 401 and fragment.content_type == "text/html"
    post = await client.post(f"/console/studies/{STUDY}/sites/{SITE_A}/extract", data={"csrf": "x"})
    assert post.status == 401 and "errorCode.unauthenticated" in await post.text()
    assert_security_headers(post)
    asset = await client.get("/console/static/console.css")
    assert asset.status == 200 and asset.headers["Cache-Control"] == "public, max-age=3600"
    assert asset.headers["Content-Security-Policy"] == SECURITY_HEADERS["Content-Security-Policy"]


async def test_unexpected_failures_are_pages_too(client, world, pool, monkeypatch, caplog):
    await world.standard()
    await give_password(pool, "crc_a")
    await sign_in(client, "crc_a")

    async def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    async def unreachable(*args, **kwargs):
        raise ConnectionRefusedError

    monkeypatch.setattr(directory, "list_roles", broken)
    with caplog.at_level(logging.ERROR, logger="participants.console"):
        resp = await client.get("/console/?who=Zelda")
    assert resp.status == 500 and resp.content_type == "text/html"
    assert_security_headers(resp)
    [record] = [r for r in caplog.records if r.name == "participants.console"]
    assert "GET /console/" in record.getMessage() and "Zelda" not in record.getMessage()
    monkeypatch.setattr(directory, "list_roles", unreachable)
    resp = await client.get("/console/")
    assert resp.status == 503 and resp.headers["Retry-After"] == "5" and resp.content_type == "text/html"
    assert_security_headers(resp)


async def test_under_a_path_prefix_links_cookie_and_pages_follow_it(make_client, world, pool):
    await world.standard()
    await give_password(pool, "crc_a")
    client = await make_client(path_prefix="/OpenClinica")
    login = await client.get("/OpenClinica/console/login")
    html = await login.text()
    assert login.status == 200 and 'action="/OpenClinica/console/login"' in html
    assert 'href="/OpenClinica/console/static/console.css"' in html
    assert "Path=/OpenClinica/console/" in login.headers["Set-Cookie"]
    token = await page_csrf(client, "/OpenClinica/console/login")
    resp = await client.post(
        "/OpenClinica/console/login",
        data={"csrf": token, "username": "crc_a", "password": "correct horse battery staple"},
        allow_redirects=False,
    )
    assert resp.status == 303 and resp.headers["Location"] == "/OpenClinica/console/"
    home = await (await client.get("/OpenClinica/console/")).text()
    assert f'href="/OpenClinica/console/studies/{STUDY}/sites/{SITE_A}"' in home
    assert (await client.get("/OpenClinica/console/nope")).content_type == "text/html"


def test_links_are_built_from_route_names_and_percent_encode_their_parts(settings):
    router = console_app(create_app(settings)).router
    assert console_url(router, "home") == "/console/"
    assert console_url(router, "asset", name="console.js") == "/console/static/console.js"
    site = console_url(router, "site", studyOID="S 1?x", siteOID="a#b%")
    assert site == "/console/studies/S%201%3Fx/sites/a%23b%25"
    assert console_url(router, "ops_deliveries", id=7) == "/console/ops/webhooks/7/deliveries"


async def test_the_session_store_uses_the_parents_redis_pool(client):
    # The parent's cleanup_ctx (which opens Redis) runs before the sub-app's startup.
    app = client.app
    assert console_app(app)[SESSIONS].redis is app[REDIS]


async def test_the_openapi_document_leaves_the_console_out(client):
    doc = await (await client.get("/openapi.json")).json()
    assert not [path for path in doc["paths"] if "/console" in path]


def test_every_form_is_csrf_checked_and_every_operator_page_needs_the_admin_flag(settings):
    for route in ROUTES:
        if route.method == "POST" and not route.access.csrf:
            # The handler checks the token itself: the bulk form (a multipart part), sign-in, sign-out.
            assert route.name in ("site_bulk", "login", "logout"), route
        if route.path.startswith("/ops"):
            assert route.access.admin, route
        if route.access.public:
            assert route.name in ("asset", "login", "logout", "oidc_login", "oidc_callback"), route
    table = console_app(create_app(settings))[ACCESS]  # what the session middleware reads
    assert table == {"console." + r.name: r.access for r in ROUTES}


@pytest.mark.parametrize("path", sorted(CONSOLE.rglob("*.py")), ids=lambda p: p.name)
def test_the_console_never_imports_the_api_handlers(path):
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        assert not [n for n in names if n == "service.web.handlers" or n.startswith("service.web.handlers.")]


def test_templates_build_links_from_route_names():
    for template in (CONSOLE / "templates").glob("*.html"):
        text = template.read_text()
        assert "{{ root }}" not in text and "/studies/{{" not in text, template.name
