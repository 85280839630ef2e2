"""HTTP faces: the WSGI dispatcher that mounts search, webhooks, metrics and the status page; bearer-token auth."""
