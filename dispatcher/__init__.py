"""The trigger dispatcher: match signals to pipelines, claim, fan out, execute.

Pure parts (`matching`, `periodic`) have no I/O; `claims`, `fanout`, `executors`, `store` and
`service` hold the edges the Celery tasks in `tasks/dispatch.py` and `tasks/pipelines.py` call.
"""
