"""The job lifecycle, shared by every job type (extracts, async bulk uploads): the row in Postgres
(the source of truth) and the arq message that carries the work.

Life of a job: ``lifecycle.create_job`` writes the row (``IN_QUEUE``) and its audit row in one
statement; after commit, ``queue.enqueue`` hands arq the job's UUID as arq's own job id (so
enqueueing twice is harmless). The worker claims an attempt (``attempts``: ``IN_PROGRESS``, one
more attempt), beats a heartbeat, and ends it (``complete_job``, ``fail_job``, ``cancel_attempt``)
only if its attempt is still the current one. Redis only carries work: the sweeper
(worker/maintenance.py) re-enqueues what Postgres says is unfinished.

Modules: ``model`` (types, statuses, the values a job is made and finished with), ``rights`` (the
owner's right, as SQL), ``store`` (reading rows), ``views`` (the wire models), ``lifecycle``
(every change of status), ``queue`` and ``attempts`` (arq and the workers), ``owned`` and
``admin`` (what a job's owner and an operator may do: the use-cases both faces call).
Imports only ``service.core`` and ``service.settings``, like the rest of the core.
"""
