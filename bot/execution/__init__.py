"""Execution layer (see DESIGN.md): order state machine, brokers, reconciliation.

* ``orders.OrderManager`` -- submits/cancels through a ``Broker``, records every transition,
  makes fills durable before acting on them, tracks the position from fills.
* ``broker.Broker`` -- the protocol; ``ccxt_broker.CcxtBroker`` (testnet/live, emulator) and
  ``paper_broker.PaperBroker`` (paper/replay) implement it.
* ``reconcile.Reconciler`` -- startup (before any order) and periodic comparison with the
  exchange.
* ``client_ids.ClientIdFactory`` -- deterministic client order ids; ``throttle.RateLimiter``
  -- the one limiter in front of every REST call.

Execution imports model, config, clock, logging (and the store only through the
``RecordSink`` protocol); never signals or strategy.
"""
