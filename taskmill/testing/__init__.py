"""Helpers for testing projects that use taskmill (``run_pending``, ``worker``)."""
