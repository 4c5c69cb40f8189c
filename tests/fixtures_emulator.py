"""Fixtures for tests that need the exchange emulator and a real ccxt client pointed at it.

Register with ``pytest_plugins = ["fixtures_emulator"]`` in tests/conftest.py, or import the
fixtures explicitly (``from fixtures_emulator import emulator, ccxt_client``).

* ``emulator``: an :class:`bot.emulator.Emulator` on a free port, stopped after the test.
  Parametrise it indirectly with a dict of constructor kwargs
  (``@pytest.mark.parametrize("emulator", [{"speed": 0}], indirect=True)``).
* ``make_emulator``: a factory for more than one, or for custom kwargs inside the test.
* ``ccxt_client``: ``make_ccxt_client`` (ccxt.pro binance) aimed at ``emulator``, closed after.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from bot.emulator import Emulator, make_ccxt_client

EMU_KEY = "emulator-key"
EMU_SECRET = "emulator-secret"


@pytest.fixture
async def make_emulator() -> AsyncIterator[Callable[..., Awaitable[Emulator]]]:
    started: list[Emulator] = []

    async def _make(**kwargs: Any) -> Emulator:
        emu = Emulator(**kwargs)
        await emu.start(port=0)
        started.append(emu)
        return emu

    yield _make
    for emu in started:
        await emu.stop()


@pytest.fixture
async def emulator(
    request: pytest.FixtureRequest, make_emulator: Callable[..., Awaitable[Emulator]]
) -> Emulator:
    kwargs: dict[str, Any] = dict(getattr(request, "param", None) or {})
    return await make_emulator(**kwargs)


@pytest.fixture
async def ccxt_client(emulator: Emulator) -> AsyncIterator[Any]:
    ex = make_ccxt_client(emulator.base_url, EMU_KEY, EMU_SECRET, timeout_ms=3000)
    yield ex
    await ex.close()
