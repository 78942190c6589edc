"""The sweeper and the admin retry re-enqueue jobs by name: every name must be a function the named queue runs."""

from __future__ import annotations

from service.core.jobs import model
from service.settings import Settings
from service.worker import tasks
from service.worker.main import build_worker


def test_every_job_type_names_a_function_of_its_queue():
    settings = Settings(redis_url="redis://127.0.0.1:6379/0")
    for job_type, (function_name, queue_field) in model.JOB_FUNCTIONS.items():
        worker = build_worker(settings, getattr(settings, queue_field))
        assert function_name in worker.functions, (job_type, function_name, queue_field)
    assert set(model.JOB_FUNCTIONS) == {model.EXTRACT_PARTICIPANTS, model.BULK_ADD_PARTICIPANTS}
    assert tasks.EXTRACT_FUNCTIONS and tasks.DEFAULT_FUNCTIONS
