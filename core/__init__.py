"""Shared pieces of geoexport used by both the API and the flows.

Settings, SQLAlchemy models and sessions, artifact storage and messaging helpers
live here so that `api/` and `flows/` never import each other.
"""
