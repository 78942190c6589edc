"""Bytes that are not the text they claim to be, where a client or a browser sends them: a bearer
token, a console cookie, a console form. Each is a clear 4xx (or no session), never a 500."""

from __future__ import annotations

import asyncio

from tests.world import SITE_A, STUDY

LIST = f"/pages/auth/api/clinicaldata/studies/{STUDY}/sites/{SITE_A}/participants"


async def _raw(client, head: bytes, body: bytes = b"") -> bytes:
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(
        head + b"Host: x\r\nConnection: close\r\n" + (b"Content-Length: %d\r\n" % len(body)) + b"\r\n" + body
    )
    await writer.drain()
    answer = await reader.read()
    writer.close()
    return answer


async def test_a_token_that_is_not_ascii_is_401(client, world):
    await world.standard()
    answer = await _raw(client, b"GET " + LIST.encode() + b" HTTP/1.1\r\nAuthorization: Bearer ab\xffcd\r\n")
    assert answer.startswith(b"HTTP/1.1 401") and b"errorCode.unauthenticated" in answer


async def test_a_console_cookie_that_is_not_ascii_is_no_session(client, world):
    await world.standard()
    for path in (b"/console/", b"/console/login"):
        answer = await _raw(
            client, b"GET " + path + b" HTTP/1.1\r\nCookie: participants_console=ab\xffcd\r\n"
        )
        assert answer.split(b" ")[1] in (b"200", b"303"), answer[:80]  # the sign-in page, or sent to it


async def test_a_console_form_that_is_not_utf8_is_400(client, world):
    await world.standard()
    head = (
        b"POST /console/login HTTP/1.1\r\nCookie: participants_console_login=a\xffb\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
    )
    for body in (b"csrf=a%FFb&username=x&password=y", b"csrf=a\xffb&username=x&password=y"):
        answer = await _raw(client, head, body)
        assert answer.split(b" ")[1] in (b"400", b"403"), answer[:80]
        assert b"text/html" in answer.split(b"\r\n\r\n")[0]
