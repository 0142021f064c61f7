"""Jobs: a command run on a Ray cluster created for it (or an existing one), persisted.

The pieces, each in its module:

- ``schema/job.schema.json`` and :mod:`.spec`: the job spec, validated like the cluster spec;
- :mod:`.models`: states (pending, starting, running, succeeded, failed, stopped) and the record;
- :mod:`.store`: records, logs and result files in a local directory or S3, and the registry
  of the stores a user's jobs are in;
- :mod:`.runner`: the :class:`~.runner.JobRunner` interface and the local runner, which
  starts one detached :mod:`.supervisor` process per job (:mod:`.driver` collects results);
- :mod:`.service`: :class:`~.service.JobService`, what the REST API, CLI and magics call
  (each face builds one through :class:`eksray_jupyter.services.Services`);
- :mod:`.watch`: what changed in the user's jobs, for the server's push stream.

RayJobs on Kubernetes are the kuberay backend's runner
(:mod:`eksray_jupyter.backends.kuberay.rayjob_runner`).

Import-light: nothing here imports ray or boto3 at import time.
"""

from __future__ import annotations
