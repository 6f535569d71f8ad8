"""Persistence: SQLAlchemy 2 async models over SQLite, migrated by Alembic."""
