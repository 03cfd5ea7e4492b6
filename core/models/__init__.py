"""SQLAlchemy 2.0 typed models. Importing this package registers every table on ``Base.metadata``."""

from core.models.base import Base
from core.models.layers import Layer
from core.models.map_jobs import CallbackAttempt, CallbackDelivery, JobStatus, MapJob, MapJobTask, TaskStatus

__all__ = ["Base", "CallbackAttempt", "CallbackDelivery", "JobStatus", "Layer", "MapJob", "MapJobTask", "TaskStatus"]

# Resource-export models register themselves when their module exists.
try:  # noqa: SIM105
    from core.models import exports as _exports  # noqa: F401
except ImportError:  # pragma: no cover - during bootstrap only
    pass
