"""An integration written for OpenClinica 4, as its documentation shows the calls: nothing in here
knows about this service. Standard library only, run as its own process by test_oc4_client.py.

    python tests/oc4_client.py SERVER STUDY_OID SITE_OID USERNAME   (password in OC4_PASSWORD)

SERVER is the host root, e.g. http://oc4.example.org: the token call goes to the user-service there,
everything else under /OpenClinica. Prints one JSON object with what it saw; exits 1 on any surprise.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid
from urllib.parse import quote


def call(
    method: str,
    url: str,
    token: str | None = None,
    body: bytes | None = None,
    content_type: str | None = None,
):
    req = urllib.request.Request(url, data=body, method=method)
    if token:
        req.add_header("Authorization", "bearer " + token)  # OC4's examples write it lower case
    if content_type:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def main(server: str, study: str, site: str, username: str) -> dict[str, object]:
    seen: dict[str, object] = {}
    # 1. The token: JSON credentials, the token is the whole plain-text body.
    creds = json.dumps({"username": username, "password": os.environ["OC4_PASSWORD"]}).encode()
    status, _, body = call(
        "POST", f"{server}/user-service/api/oauth/token", body=creds, content_type="application/json"
    )
    assert status == 200, (status, body)
    token = body.decode()
    base = f"{server}/OpenClinica/pages/auth/api/clinicaldata/studies/{quote(study)}/sites/{quote(site)}"

    # 2. Add a participant and register it for Participate.
    person = {"subjectKey": "OC4-001", "firstName": "Jo", "lastName": "Doe, Jr.", "emailAddress": "jo@example.org",
              "phoneNumber": "+1 5550101"}  # fmt: skip
    status, _, body = call(
        "POST", base + "/participants?register=y", token, json.dumps(person).encode(), "application/json"
    )
    assert status == 200, (status, body)
    seen["added"] = json.loads(body)

    # 2b. As a study app does next: read the participant's access code, reset it, read the link.
    study_base = f"{server}/OpenClinica/pages/auth/api/clinicaldata/studies/{quote(study)}"
    one = base + "/participant?includeParticipateInfo=y&participantID=OC4-001"
    status, _, body = call("GET", one, token)
    assert status == 200, (status, body)
    seen["firstCode"] = json.loads(body)["accessCode"]
    reset = json.dumps({"resetAccessCode": True}).encode()
    status, _, body = call(
        "POST", study_base + "/participants/OC4-001/connect", token, reset, "application/json"
    )
    assert status == 200, (status, body)
    status, _, body = call("GET", one, token)
    assert status == 200, (status, body)
    seen["code"] = json.loads(body)["accessCode"]
    status, _, body = call("GET", study_base + "/participants/OC4-001/accessLink?includeAccessCode=y", token)
    assert status == 200, (status, body)
    seen["accessLink"] = json.loads(body)

    # 3. Bulk add from a CSV file, multipart as a browser form sends it.
    boundary = uuid.uuid4().hex
    csv_file = b"ParticipantID\r\nOC4-002\r\nOC4-003\r\n"
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"ids.csv\"\r\n"
            f"Content-Type: text/csv\r\n\r\n").encode() + csv_file + f"\r\n--{boundary}--\r\n".encode()  # fmt: skip
    status, _, body = call(
        "POST", base + "/participants/bulk", token, form, f"multipart/form-data; boundary={boundary}"
    )
    assert status == 200, (status, body)
    seen["bulk"] = json.loads(body)

    # 4. Extract: the answer is "job uuid: <uuid>".
    status, _, body = call("GET", base + "/participants/extractPartcipantsInfo", token)
    assert status == 200 and body.startswith(b"job uuid: "), (status, body)
    job = body.decode().split(": ", 1)[1].strip()

    # 5. Poll downloadFile until the body is no longer jobInProgress (as OC4 clients do), then keep it.
    polls = 0
    while True:
        status, headers, body = call(
            "GET", f"{server}/OpenClinica/pages/auth/api/jobs/{job}/downloadFile", token
        )
        assert status == 200, (status, body)
        if b"jobInProgress" not in body:
            break
        polls += 1
        assert polls < 300, "the job never finished"
        time.sleep(min(float(headers.get("Retry-After", "1")), 0.2))
    seen["polls"] = polls
    seen["contentType"] = headers.get("Content-Type")
    seen["disposition"] = headers.get("Content-Disposition")
    seen["csv"] = body.decode("utf-8")
    return seen


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:5])))
