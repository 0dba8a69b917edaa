"""Coordination between jobs: unique jobs and concurrency limits, enforced by the database."""
