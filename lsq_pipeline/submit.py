"""Submitting runs through the Dagster webserver's GraphQL API (dagster-graphql's client): what `lsq trigger`'s fast
lanes use, so their runs are queued, limited and shown exactly like the sensors' runs, and take whatever run launcher
the instance is configured with."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from urllib.parse import urlparse

LOCATION = "lsq_pipeline"  # workspace.yaml's location_name
# The runs list's "Launched by" column shows a run's `user` tag (else a schedule, sensor or automation tag, else
# "Manually launched"): trigger runs say who launched them, beside their partition tag.
LAUNCHED_BY_TAG = {"user": "lsq trigger"}

Submit = Callable[[str, Mapping[str, str]], str]


def graphql_submitter(url: str, timeout_s: int = 10) -> Submit:
    """`submit(job name, tags) -> run id` on the webserver at `url`; callable from several threads at once (one
    client per thread, connected on its first use), so runs that are ready together are submitted together."""
    from dagster_graphql import DagsterGraphQLClient

    parsed = urlparse(url)
    local = threading.local()

    def submit(job: str, tags: Mapping[str, str]) -> str:
        client: DagsterGraphQLClient | None = getattr(local, "client", None)
        if client is None:
            client = local.client = DagsterGraphQLClient(
                parsed.hostname or "127.0.0.1", port_number=parsed.port, timeout=timeout_s
            )
        return client.submit_job_execution(job, repository_location_name=LOCATION, tags={**tags, **LAUNCHED_BY_TAG})

    return submit
