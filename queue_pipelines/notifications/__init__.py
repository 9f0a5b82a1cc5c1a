"""Notifications: templated e-mail to buyers and operators, signed webhooks to the platform.

Business rules only (rendering, signing, at-most-once delivery, tenant profiles, the local
outbox); the SMTP and webhook clients are resources (resources/smtp.py, resources/webhooks.py)
and the Dagster steps live in queue_pipelines/jobs/notification.py.
"""
