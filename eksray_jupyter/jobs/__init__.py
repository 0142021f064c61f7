"""Jobs: a command run on a Ray cluster created for it (or an existing one), persisted.

Issue #6, "RayJobs for automated pipelines". The pieces, each in its module:

- ``schema/job.schema.json`` and :mod:`.spec`: the job spec, validated like the cluster spec;
- :mod:`.models`: states (pending, starting, running, succeeded, failed, stopped) and the record;
- :mod:`.store`: records, logs and result files in a local directory or S3;
- :mod:`.runner`: the :class:`~.runner.JobRunner` interface and the local runner, which
  starts one detached :mod:`.supervisor` process per job (:mod:`.driver` collects results);
- :mod:`.service`: :class:`~.service.JobService`, what the REST API, CLI and magics call
  (``ClusterService.jobs``).

Import-light: nothing here imports ray or boto3 at import time.
"""

from __future__ import annotations
