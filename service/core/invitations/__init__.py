"""Invitations to the Participate portal by email and SMS: queued in the caller's transaction
(``queue_invitation``), delivered by the worker from the outbox (``delivery``), rendered from the
study's template at each attempt (``templates``), sent through SMTP or an SMS provider
(``transports``). docs/invitations.md tells the whole story."""

from service.core.invitations.model import (
    Channel,
    InvitationAttempt,
    InvitationList,
    InvitationView,
    StudyInvitationList,
)
from service.core.invitations.outbox import list_invitations, list_study_invitations, queue_invitation

__all__ = [
    "Channel",
    "InvitationAttempt",
    "InvitationList",
    "InvitationView",
    "StudyInvitationList",
    "list_invitations",
    "list_study_invitations",
    "queue_invitation",
]
