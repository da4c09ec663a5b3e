"""Runs as a lifecycle: the service the API calls, and the executor that drives queued runs."""
