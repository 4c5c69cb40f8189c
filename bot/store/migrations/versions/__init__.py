"""Alembic revisions, oldest first (``0001_initial`` creates tables and views)."""
