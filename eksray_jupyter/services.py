"""The user's clusters and jobs, composed once by each face.

The server extension, a CLI run and a kernel's magics each hold one :class:`Services`:
the :class:`~.core.service.ClusterService` and the :class:`~.jobs.service.JobService` built
on it. The core knows nothing of jobs; this is where the two meet. The job service is
built on first use, so a face that never touches jobs never loads a job runner.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .core.service import ClusterService

if TYPE_CHECKING:
    from .jobs.service import JobService


class Services:
    def __init__(self, clusters: ClusterService, jobs: JobService | None = None) -> None:
        self.clusters = clusters
        self._jobs = jobs

    @classmethod
    def from_environment(cls) -> Services:
        """What the CLI and the magics use: the Jupyter config files, then ``$EKSRAY_CONFIG``."""
        return cls(ClusterService.from_environment())

    @property
    def jobs(self) -> JobService:
        if self._jobs is None:
            from .jobs.service import JobService

            self._jobs = JobService(self.clusters)
        return self._jobs

    def close(self) -> None:
        """Stop this process's background threads (the job runner's, then the backend's)."""
        if self._jobs is not None:  # never build the job service only to close it
            self._jobs.close()
        self.clusters.close()
