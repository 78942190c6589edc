"""Invitations to the Participate portal by email and SMS: queued with the change that asks for
them, delivered by the worker. (Placeholder interface while the delivery side is being merged:
queueing refuses with a clear 503 rather than pretending to send.)"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from service.core.errors import ApiError


class InvitationList(BaseModel):
    invitations: list[Any] = []


async def queue_invitation(conn: Any, *, participant_id: int, channel: str, actor: Any, settings: Any) -> Any:
    raise ApiError("serviceUnavailable", {"reason": "invitations"}, headers={"Retry-After": "60"})


async def list_invitations(conn: Any, participant_id: int) -> InvitationList:
    return InvitationList()
