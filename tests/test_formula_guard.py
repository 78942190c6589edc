"""The formula guard sees through look-alikes: a cell whose first character is, after NFKC
normalisation, one a spreadsheet treats as the start of a formula gets a leading apostrophe in the
extract; other non-ASCII first letters are left alone."""

from __future__ import annotations

from tests.test_extract import HEADER, add_participant, download, parse_csv, run_jobs, submit
from tests.world import SITE_A

# first name -> expected cell
CASES = {
    "＝1+1": "'＝1+1",  # full-width equals
    "＋49 30": "'＋49 30",  # full-width plus
    "－2": "'－2",  # full-width hyphen-minus
    "＠SUM(A1)": "'＠SUM(A1)",  # full-width commercial at
    "﹦HYPERLINK": "'﹦HYPERLINK",  # small equals sign
    "⁼x": "'⁼x",  # superscript equals
    "₊y": "'₊y",  # subscript plus
    "=plain": "'=plain",  # the ASCII ones, as before
    "Émile": "Émile",  # an ordinary non-ASCII letter
    "Ｚoë": "Ｚoë",  # full-width letter: no formula
    "Ann": "Ann",
}


async def test_look_alike_formula_characters_are_guarded(client, world, pool, settings):
    await world.standard()
    for n, first in enumerate(CASES):
        await add_participant(pool, SITE_A, f"FG-{n:02d}", first_name=first, last_name="Doe", phone="＋1 555")
    job = await submit(client, world)
    await run_jobs(settings)
    resp = await download(client, world, job)
    assert resp.status == 200
    rows = parse_csv(await resp.read())
    assert rows[0] == HEADER
    got = {r[0]: r[1] for r in rows[1:]}
    assert got == {f"FG-{n:02d}": want for n, want in enumerate(CASES.values())}
    # The phone column's guard sees the full-width plus too.
    assert {r[4] for r in rows[1:]} == {"'＋1 555"}
