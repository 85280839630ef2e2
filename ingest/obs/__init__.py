"""Observability: what the pipeline is doing, and why output quality moved.

* :mod:`.clock`    per-document stage timings, collected by the pipeline;
* :mod:`.trace`    the outcome rows' ``trace`` (event, lane, stages, versions) and ``ingest status DOC``;
* :mod:`.quality`  daily quality snapshots per source and alerts on a drop against the trailing window;
* :mod:`.lanes`    lane depth and oldest-item age from the broker;
* :mod:`.metrics`  Prometheus metrics computed from the store (``/metrics``);
* :mod:`.page`     the read-only status page (``/``);
* :mod:`.logs`     structured (JSON) log lines.

Metrics come from the store, not from worker memory: workers write each document's stage timings
into its outcome row, and whoever serves ``/metrics`` (``ingest serve``, ``ingest worker
--metrics-port``) turns the rows into histograms. Prefork children that are recycled every 1000
tasks, workers on other machines and a restarted server all see the same numbers, and nothing
needs a shared multiprocess directory.
"""
