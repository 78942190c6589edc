"""Sign-in budgets under parallel guessing, and client addresses behind reverse proxies: the OC4
token endpoint and the console share one throttle (core/throttle.py ``attempt``), real Redis."""

from __future__ import annotations

import asyncio
from collections import Counter

from aiohttp.test_utils import make_mocked_request

from service.web.clients import client_address, proxies
from tests.test_token_endpoint import PASSWORD, TOKEN_URL, sign_in, with_password
from tests.world import expect

PROXY = ["127.0.0.1/32"]  # the test client's peer plays the reverse proxy


def via(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": f"203.0.113.250, {address}"}  # a client-written hop, then the proxy's


async def test_parallel_guesses_at_one_username_check_at_most_the_budget(client, world, pool):
    """29 wrong passwords and the right one last, all at once, from one address: at most five are
    checked (the rest 429; of the five, those past the address's two verifications at a time are
    503 and given back), and the right one is refused, not answered with a token."""
    await world.standard()
    await with_password(pool, "crc_a")

    async def right_one_last():
        await asyncio.sleep(0.03)  # the 29 are in: the right password arrives while they are checked
        return await sign_in(client, "crc_a", PASSWORD)

    wrong = (sign_in(client, "crc_a", f"guess number {i:02d}") for i in range(29))
    answers = await asyncio.gather(*wrong, right_one_last())
    statuses = Counter(a.status for a in answers)
    assert statuses[429] == 25 and statuses[401] + statuses[503] == 5 and set(statuses) <= {401, 429, 503}
    assert answers[-1].status == 429  # the right password, sent last: refused, no token
    assert (await answers[-1].json())["message"] == "errorCode.tooManyAttempts"


async def test_one_users_typos_never_refuse_a_colleague_behind_the_same_proxy(make_client, world, pool):
    await world.standard()
    client = await make_client(trusted_proxies=PROXY)
    for name in ("crc_a", "crc_b"):
        await with_password(pool, name)
    for _ in range(5):
        resp = await client.post(
            TOKEN_URL, json={"username": "crc_a", "password": "typo typo!"}, headers=via("10.1.1.1")
        )
        await expect(resp, 401)
    resp = await client.post(
        TOKEN_URL, json={"username": "crc_b", "password": PASSWORD}, headers=via("10.1.1.1")
    )
    await expect(resp, 200)  # same hospital address, another person: signed in
    resp = await client.post(
        TOKEN_URL, json={"username": "crc_a", "password": PASSWORD}, headers=via("10.1.1.2")
    )
    await expect(resp, 429)  # crc_a's own budget is spent wherever crc_a signs in from


async def test_the_address_budget_bounds_a_spray_and_spares_other_addresses(make_client, world, pool):
    await world.standard()
    await with_password(pool, "crc_a")
    client = await make_client(trusted_proxies=PROXY, login_max_failures_per_address=10)
    spray = [
        client.post(TOKEN_URL, json={"username": f"nobody{i}", "password": "x" * 12}, headers=via("10.2.2.2"))
        for i in range(15)
    ]
    statuses = Counter(a.status for a in await asyncio.gather(*spray))
    # Ten attempts taken from the address's budget (checked, or 503 and given back), five refused.
    assert statuses[429] == 5 and statuses[401] + statuses[503] == 10 and set(statuses) <= {401, 429, 503}
    resp = await client.post(
        TOKEN_URL, json={"username": "crc_a", "password": PASSWORD}, headers=via("10.2.2.3")
    )
    await expect(resp, 200)


async def test_forwarded_headers_from_an_untrusted_peer_are_ignored(make_client, world):
    await world.standard()
    client = await make_client(login_max_failures_per_address=3)  # no trusted proxy
    for i in range(3):
        body = {"username": f"nobody{i}", "password": "x" * 12}
        await expect(await client.post(TOKEN_URL, json=body, headers=via(f"10.3.3.{i}")), 401)
    # Each claimed another address, but all came from one peer: its budget is spent.
    body = {"username": "nobody9", "password": "x" * 12}
    await expect(await client.post(TOKEN_URL, json=body, headers=via("10.3.3.9")), 429)


def _request(peer: str, **headers: str):
    request = make_mocked_request("POST", TOKEN_URL, headers=headers)
    request._transport_peername = (peer, 40000)  # type: ignore[attr-defined]
    return request


def test_the_client_is_the_right_most_hop_no_trusted_proxy_wrote():
    trust = proxies(["10.0.0.0/8", "2001:db8::/32"])
    forwarded_for = {"X-Forwarded-For": "198.51.100.7, 192.0.2.1, 10.0.0.5"}
    assert client_address(_request("10.0.0.9", **forwarded_for), trust) == "192.0.2.1"
    assert client_address(_request("192.0.2.99", **forwarded_for), trust) == "192.0.2.99"  # not a proxy
    assert client_address(_request("10.0.0.9", **forwarded_for), proxies([])) == "10.0.0.9"  # none trusted
    with_ports = {"X-Forwarded-For": "198.51.100.7, 192.0.2.1:4711, [2001:db8::2]:443"}
    assert client_address(_request("10.0.0.9", **with_ports), trust) == "192.0.2.1"
    assert client_address(_request("10.0.0.9", **{"X-Forwarded-For": "unknown"}), trust) == "10.0.0.9"
    assert client_address(_request("10.0.0.9"), trust) == "10.0.0.9"  # no header: the proxy itself
    # Proxies that append to X-Forwarded-For: a Forwarded the client wrote is never read.
    spoofed = {"Forwarded": "for=6.6.6.6", "X-Forwarded-For": "192.0.2.1"}
    assert client_address(_request("10.0.0.9", **spoofed), trust) == "192.0.2.1"
    # Proxies that write Forwarded (RFC 7239): its for= hops, and an X-Forwarded-For is never read.
    rfc = proxies(["10.0.0.0/8", "2001:db8::/32"], "forwarded")
    forwarded = {"Forwarded": 'for=198.51.100.7, for="[2001:db8::1]:4711";proto=https, for="192.0.2.44:1234"'}
    assert client_address(_request("10.0.0.9", **forwarded), rfc) == "192.0.2.44"
    inner = {"Forwarded": 'for=192.0.2.8, for="[2001:db8::1]"', "X-Forwarded-For": "6.6.6.6"}
    assert client_address(_request("10.0.0.9", **inner), rfc) == "192.0.2.8"
    assert client_address(_request("10.0.0.9", Forwarded="xfor=6.6.6.6"), rfc) == "10.0.0.9"


async def test_a_spray_past_the_waiting_hashes_is_503_at_once_and_costs_no_budget(make_client, world, pool):
    """More sign-ins at once than a process holds hashes for: the rest are told to come back
    (503, Retry-After) instead of queueing, and their attempts are given back."""
    from service.core.accounts import HASHES

    await world.standard()
    await with_password(pool, "crc_a")
    client = await make_client(trusted_proxies=PROXY)
    spray = [
        client.post(
            TOKEN_URL, json={"username": f"nobody{i}", "password": "guessing!!!!"}, headers=via(f"10.4.{i}.1")
        )
        for i in range(HASHES.cap + 20)
    ]
    answers = await asyncio.gather(*spray)
    statuses = Counter(a.status for a in answers)
    assert set(statuses) == {401, 503}
    assert statuses[401] <= HASHES.cap + 5  # a few may start as earlier ones finish, never all
    assert all(a.headers["Retry-After"] == "1" for a in answers if a.status == 503)
    assert HASHES.held == 0
    # A 503 was no attempt: the right password of a user refused that way still signs in.
    refused = next(i for i, a in enumerate(answers) if a.status == 503)
    async with pool.acquire() as conn:
        await conn.execute("UPDATE users SET username = $1 WHERE username = 'crc_a'", f"nobody{refused}")
    for _ in range(4):  # four more failures: with the refused attempt counted it would be the fifth
        await client.post(TOKEN_URL, json={"username": f"nobody{refused}", "password": "typo typo!"})
    resp = await client.post(TOKEN_URL, json={"username": f"nobody{refused}", "password": PASSWORD})
    await expect(resp, 200)


async def test_a_spray_from_one_address_leaves_a_colleague_elsewhere_a_prompt_sign_in(
    make_client, world, pool
):
    """80 guesses at once from one address: they hold at most two of the process's verifications
    (the rest 503 at once, given back), so a sign-in from another address meanwhile is answered
    in well under a second instead of waiting behind the spray's hashes."""
    import time

    await world.standard()
    await with_password(pool, "crc_b")
    client = await make_client(trusted_proxies=PROXY)
    spray = [
        client.post(
            TOKEN_URL, json={"username": f"nobody{i}", "password": "guessing!!!!"}, headers=via("10.5.5.5")
        )
        for i in range(80)
    ]

    async def colleague() -> tuple[int, float]:
        await asyncio.sleep(0.02)  # the spray is under way
        t0 = time.perf_counter()
        body = {"username": "crc_b", "password": PASSWORD}
        resp = await client.post(TOKEN_URL, json=body, headers=via("10.5.5.6"))
        return resp.status, time.perf_counter() - t0

    *answers, (status, seconds) = await asyncio.gather(*spray, colleague())
    statuses = Counter(a.status for a in answers)
    assert set(statuses) == {401, 503} and statuses[401] <= 80
    assert status == 200 and seconds < 1.0, (status, seconds)
