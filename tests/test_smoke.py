from tests.world import SITE_A, STUDY, expect

URL = f"/pages/auth/api/clinicaldata/studies/{STUDY}/sites/{SITE_A}/participants"


async def test_crc_adds_a_participant_and_registers_it(client, world):
    await world.standard()
    resp = await client.post(
        URL + "?register=y",
        headers={"Authorization": "bearer " + world.token("crc_a")},
        json={
            "subjectKey": "OHIO-5",
            "firstName": "OHIO-5",
            "lastName": "ОНІО",
            "emailAddress": "OHIOS@openclinica.com",
            "phoneNumber": "+1 1234567890",
        },
    )
    body = await expect(resp, 200)
    assert body == {
        "subjectKey": "OHIO-5",
        "subjectOid": "SS_OHIO5",
        "status": "Available",
        "participateStatus": "CREATED",
        "siteOid": SITE_A,
    }
