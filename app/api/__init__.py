"""The HTTP layer: parse, call the service, shape the response."""
