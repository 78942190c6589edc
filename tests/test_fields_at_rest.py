"""Personal fields as Postgres holds them: ciphertexts bound to their participant and field, blind
indexes for the lookups, nothing in the plain columns; through the real API and a real database."""

from __future__ import annotations

import asyncpg
import pytest

from service.core.protection.fields import PERSONAL, keys
from service.core.protection.keyring import normalise
from tests.people import person
from tests.test_participant_access import API, add
from tests.world import expect


async def stored(pool: asyncpg.Pool, key: str) -> asyncpg.Record:
    return await pool.fetchrow("SELECT * FROM participants WHERE subject_key = $1", key)


async def test_a_new_participant_is_stored_encrypted_and_read_back_in_clear(client, world, pool):
    await world.standard()
    await add(client, world, "F-1", firstName="Zoë", lastName="Quartermaine", emailAddress="zq@example.org",
              phoneNumber="+1 5550199", identifier="MRN-4242")  # fmt: skip
    row = await stored(pool, "F-1")
    clear = await person(pool, "F-1")
    assert clear is not None and clear["first_name"] == "Zoë" and clear["access_code"]
    for column in PERSONAL:
        assert row.get(column) is None  # no plain column (or never written, before it is dropped)
        blob = bytes(row[column + "_ct"])
        assert clear[column].encode() not in blob and clear[column].lower().encode() not in blob.lower()
        assert len(blob) == 4 + 12 + len(clear[column].encode()) + 16  # key id, nonce, ciphertext, tag
    async with pool.acquire() as conn:
        ring = keys(conn)
    assert row["last_name_bidx"] == ring.blind("last_name", " QUARTERMAINE ", row["study_id"])
    assert row["access_code_bidx"] == ring.blind("access_code", clear["access_code"])


async def test_equal_values_encrypt_differently_and_index_equally_only_within_a_study(client, world, pool):
    await world.standard()
    await add(client, world, "F-1", lastName="Müller")
    await add(client, world, "F-2", lastName="Müller")
    one, two = await stored(pool, "F-1"), await stored(pool, "F-2")
    assert one["last_name_ct"] != two["last_name_ct"]  # a fresh nonce each time: no equality leaks
    assert one["last_name_bidx"] == two["last_name_bidx"]  # what exact-match search needs
    async with pool.acquire() as conn:
        ring = keys(conn)
    assert ring.blind("last_name", "Müller", one["study_id"]) != ring.blind("last_name", "Müller", 10_000)


async def test_a_ciphertext_moved_to_another_participant_is_refused_not_shown(client, world, pool):
    """Associated data binds each ciphertext to its row and field: copying F-2's name into F-1 (an
    edit by SQL) makes F-1 unreadable; the answer names nobody."""
    await world.standard()
    await add(client, world, "F-1", firstName="Alice")
    await add(client, world, "F-2", firstName="Bathsheba")
    await pool.execute(
        "UPDATE participants SET first_name_ct = (SELECT first_name_ct FROM participants WHERE subject_key = 'F-2')"
        " WHERE subject_key = 'F-1'"
    )
    resp = await client.get(f"{API}/participants/F-1", headers=world.auth("dm"))
    text = await resp.text()
    assert resp.status == 500 and "Bathsheba" not in text and "Alice" not in text
    assert (await resp.json())["message"] == "errorCode.unreadableData"
    await pool.execute(
        "UPDATE participants SET last_name_ct = first_name_ct WHERE subject_key = 'F-2'"  # another field
    )
    resp = await client.get(f"{API}/participants/F-2", headers=world.auth("dm"))
    text = await resp.text()
    assert resp.status == 500 and "Bathsheba" not in text and "errorCode.unreadableData" in text


async def test_a_ciphertext_under_a_key_the_database_does_not_hold_is_unreadable_data(client, world, pool):
    """A key id no data key has (the bytes edited, or the key deleted by hand): after one re-read of
    the keys, the same answer as a moved ciphertext, naming nobody."""
    await world.standard()
    await add(client, world, "F-1", firstName="Alice")
    await pool.execute(
        "UPDATE participants SET first_name_ct = overlay(first_name_ct placing '\\x000f4240'::bytea from 1 for 4)"
        " WHERE subject_key = 'F-1'"
    )
    resp = await client.get(f"{API}/participants/F-1", headers=world.auth("dm"))
    text = await resp.text()
    assert resp.status == 500 and "Alice" not in text
    assert (await resp.json())["message"] == "errorCode.unreadableData"


@pytest.mark.parametrize(
    ("typed", "found"),
    [
        ("%EF%BC%AD%C3%BC%EF%BC%AC%EF%BC%AC%EF%BC%A5%EF%BC%B2", True),  # full-width "ＭüＬＬＥＲ": NFKC
        ("%20M%C3%9CLLER%09", True),  # case and surrounding white space
        ("Muller", False),  # no accent folding: a different name
    ],
)
async def test_search_matches_the_normalised_value_through_the_blind_index(client, world, typed, found):
    await world.standard()
    await add(client, world, "S-1", lastName="Müller")
    url = f"{API}/participants/searchByFields?lastName={typed}"
    answer = await expect(await client.get(url, headers=world.auth("dm")), 200)
    assert [a["participantId"] for a in answer] == (["S-1"] if found else [])


async def test_a_changed_name_is_found_by_its_new_value_only(client, world):
    await world.standard()
    await add(client, world, "S-1", lastName="Old")
    await add(client, world, "S-1", lastName="New")  # the add call updates an existing ID
    url = f"{API}/participants/searchByFields?lastName="
    assert await expect(await client.get(url + "old", headers=world.auth("dm")), 200) == []
    assert [
        a["participantId"] for a in await expect(await client.get(url + "new", headers=world.auth("dm")), 200)
    ] == ["S-1"]


def test_normalisation_is_nfkc_casefold_trim():
    assert normalise("  ＳTRAẞE\t") == normalise("strasse") == b"strasse"
    assert normalise("ﬁle") == b"file"


async def test_access_codes_stay_unique_through_their_blind_index(client, world, pool):
    await world.standard()
    await add(client, world, "C-1")
    await add(client, world, "C-2")
    with pytest.raises(asyncpg.UniqueViolationError):
        await pool.execute(
            "UPDATE participants SET access_code_bidx = (SELECT access_code_bidx FROM participants"
            " WHERE subject_key = 'C-1') WHERE subject_key = 'C-2'"
        )
