"""Plain clients of the outside services: Stripe (stripe), SMTP (smtp), outbound webhooks
(webhooks, webhook_signing). No Dagster here: resources/ configure and build these."""
