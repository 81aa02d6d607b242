"""The push engine: triggers → policy → durable outbox → channels (live streams, webhooks).

Entry points (also for a separate worker process): ``PushEngine.observe(events)``,
``PushEngine.observe_items(items)``, ``PushEngine.tick(now)`` and ``PushEngine.deliver(now)``;
storage behind the ``Outbox`` protocol (``open_outbox(url)``).
"""
