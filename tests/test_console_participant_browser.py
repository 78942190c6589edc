"""The participant page in a real browser (system Chromium through Playwright), at desktop and
phone widths: from the site's list to the participant, the access code shown on request and reset,
no horizontal overflow, no console errors."""

from __future__ import annotations

import pytest

from tests.browser import browser_context, unavailable_reason
from tests.console_helpers import PASSWORD, give_password
from tests.people import code_of
from tests.test_console_browser import DOCS, SHOTS
from tests.world import SITE_A, STUDY, expect

REASON = unavailable_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")
API = f"/pages/auth/api/clinicaldata/studies/{STUDY}/sites/{SITE_A}/participants"


async def signed_in_page(context, client, width: int):
    """A page of ``width`` pixels signed in as crc_a, and the list its console errors land in."""
    context.set_default_timeout(30_000)
    page = await context.new_page()
    await page.set_viewport_size({"width": width, "height": 900})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    await page.goto(str(client.make_url("/console/login")))
    await page.get_by_label("Username").fill("crc_a")
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url("**/console/")
    return page, errors


@pytest.mark.parametrize("width", [1280, 390])
async def test_a_crc_opens_a_participant_reveals_and_resets_its_code(make_client, world, pool, width):
    client = await make_client()
    await world.standard()
    await give_password(pool, "crc_a")
    person = {"subjectKey": "WEB-1", "firstName": "Zoë", "lastName": "Müller-Lüdenscheidt, Jr.",
              "emailAddress": "zoe.mueller-luedenscheidt@example.org", "phoneNumber": "+49 1511234567"}  # fmt: skip
    await expect(await client.post(API + "?register=y", json=person, headers=world.auth("crc_a")), 200)
    code = await code_of(pool)
    async with browser_context() as context:
        page, errors = await signed_in_page(context, client, width)
        await page.goto(str(client.make_url(f"/console/studies/{STUDY}/sites/{SITE_A}")))
        await page.get_by_role("link", name="WEB-1").click()
        await page.wait_for_selector("text=Zoë")
        assert code not in await page.content()
        assert "Zoë" not in await page.title()
        wide = await page.evaluate("document.documentElement.scrollWidth")
        assert wide <= width, f"the page is {wide} px wide at {width} px"

        await page.get_by_role("button", name="Show access code").click()
        assert await page.locator("#access-code").inner_text() == code
        if SHOTS:
            phone = "-phone" if width < 500 else ""
            await page.screenshot(path=str(DOCS / f"console-participant{phone}.png"), full_page=True)
        await page.get_by_role("button", name="Reset access code").click()
        await page.wait_for_selector("text=has a new access code")
        assert code not in await page.content()
        assert await code_of(pool) not in (None, code)
        assert errors == []


@pytest.mark.parametrize("width", [1280, 390])
async def test_the_site_page_lists_participants_first_and_fits_a_phone(make_client, world, pool, width):
    client = await make_client()
    await world.standard()
    await give_password(pool, "crc_a")
    for n in range(3):
        person = {"subjectKey": f"SITE-{n}", "firstName": "Maximilian-Alexander", "lastName": "Oberbürgermeister",
                  "emailAddress": f"maximilian.alexander.{n}@hospital-example.org", "phoneNumber": "+49 15112345678"}  # fmt: skip
        await expect(await client.post(API + "?register=y", json=person, headers=world.auth("crc_a")), 200)
    async with browser_context() as context:
        page, errors = await signed_in_page(context, client, width)
        await page.get_by_role("link", name=f"Site {SITE_A}").click()
        headings = await page.locator("h2").all_inner_texts()
        assert headings[0] == "Participants" and headings[-1] == "Jobs"
        if SHOTS:
            phone = "-phone" if width < 500 else ""
            await page.screenshot(path=str(DOCS / f"console-site{phone}.png"), full_page=width < 500)
        await page.get_by_label("Participant ID starts with").fill("site-1")
        await page.get_by_role("button", name="Search").click()
        await page.wait_for_selector("text=1 participant whose ID starts with")
        wide = await page.evaluate("document.documentElement.scrollWidth")
        assert wide <= width, f"the page is {wide} px wide at {width} px"
        await page.get_by_role("button", name="Remove SITE-1").click()
        await page.wait_for_selector("text=Participant SITE-1 was removed.")
        await page.get_by_role("button", name="Restore SITE-1").click()
        await page.wait_for_selector("text=Participant SITE-1 was restored.")
        wide = await page.evaluate("document.documentElement.scrollWidth")
        assert wide <= width, f"the full list is {wide} px wide at {width} px"
        assert errors == []
