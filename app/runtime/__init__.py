"""What a process runs, built once from its settings (`Runtime`), and the `worker` process."""

from app.runtime.runtime import Runtime

__all__ = ["Runtime"]
