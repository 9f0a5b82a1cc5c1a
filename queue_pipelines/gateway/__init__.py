"""The gateway (port 3011): authenticated HTTP intake, Stripe webhooks, probes, metrics."""
