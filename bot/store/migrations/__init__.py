"""Alembic environment and revisions of the store schema (shipped inside the package)."""
