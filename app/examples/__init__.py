"""The bundled example agents and a fake-model script that plays them without an API key."""
