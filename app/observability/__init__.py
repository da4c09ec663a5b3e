"""What a process tells its operators: Prometheus metrics and OpenTelemetry spans."""
