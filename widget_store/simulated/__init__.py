"""The demo's outside world: a payment provider, a carrier and travel services, behind ports.

Only `create_app` chooses these; nothing in the saga imports them. They keep their own
tables in the store's database because the demo has one database, not because the
store may read them.
"""
