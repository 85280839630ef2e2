"""Celery app and tasks (``celery -A workers worker``)."""
from .app import app  # noqa: F401

celery = app
