"""A Binance-spot-compatible exchange on 127.0.0.1 (REST + websockets) with fault injection.

``Emulator`` runs it in-process (tests, ``bot demo``); ``bot emulator serve`` runs it as a
command; ``make_ccxt_client`` points a real ccxt client at it. See DESIGN.md and
``bot/emulator/faults.py`` for the fault SPEC grammar.
"""

from bot.emulator.client import make_ccxt_client
from bot.emulator.faults import Faults, FaultSpecError
from bot.emulator.server import Emulator

__all__ = ["Emulator", "FaultSpecError", "Faults", "make_ccxt_client"]
