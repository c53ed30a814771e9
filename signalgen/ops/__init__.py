"""Operating the bus: dead letters, cost budgets, per-owner rate limits, metrics, dashboard data.

Plain modules (no Celery): the tasks in `tasks/ops.py`, the `signalgen` commands and the HTTP
routers call these with their resources passed in.
"""
