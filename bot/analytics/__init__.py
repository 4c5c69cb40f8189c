"""Analytics on top of signals and fills: markouts, signal edge, and the cost gate for entries.

Why a layer of its own: these modules answer "do the signals pay for their costs?". They read
market data and signals (``bot.signals``) and our fills (``bot.model``), and the strategy reads
them (``CostGate``); they never import execution or the store.
"""
