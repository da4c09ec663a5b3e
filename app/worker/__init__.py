"""The worker: the executor (claim loop, heartbeat, stop), the driver of one claimed run, the
observer that stores each engine checkpoint, and retries through database faults."""
