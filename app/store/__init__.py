"""The durable store: tables, repositories and the database (SQLite or PostgreSQL)."""
