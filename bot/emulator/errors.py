"""Binance's error answers, as the emulator sends them.

Why a module of its own: the codes and messages are the contract ccxt maps to exception
classes (``-2010`` + "insufficient balance" -> ``InsufficientFunds``, ``-2011`` ->
``OrderNotFound``, ``-1021`` -> ``InvalidNonce``, ...), so they are written once, exactly
as the exchange words them, and raised from auth, matching and the server alike.
"""

from __future__ import annotations


class ApiError(Exception):
    """An error answer: HTTP status, Binance code and message."""

    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(f"{status} {code} {msg}")
        self.status = status
        self.code = code
        self.msg = msg

    def body(self) -> dict[str, object]:
        return {"code": self.code, "msg": self.msg}


def bad_key_format() -> ApiError:
    return ApiError(401, -2014, "API-key format invalid.")


def bad_key() -> ApiError:
    return ApiError(401, -2015, "Invalid API-key, IP, or permissions for action.")


def bad_signature() -> ApiError:
    return ApiError(400, -1022, "Signature for this request is not valid.")


def outside_recv_window() -> ApiError:
    return ApiError(400, -1021, "Timestamp for this request is outside of the recvWindow.")


def ahead_of_server(ms: int = 1000) -> ApiError:
    return ApiError(400, -1021, f"Timestamp for this request was {ms}ms ahead of the server's time.")


def mandatory(param: str) -> ApiError:
    return ApiError(400, -1102, f"Mandatory parameter '{param}' was not sent, was empty/null, or malformed.")


def bad_symbol() -> ApiError:
    return ApiError(400, -1121, "Invalid symbol.")


def filter_failure(name: str) -> ApiError:
    return ApiError(400, -1013, f"Filter failure: {name}")


def insufficient_balance() -> ApiError:
    return ApiError(400, -2010, "Account has insufficient balance for requested action.")


def would_take() -> ApiError:
    return ApiError(400, -2010, "Order would immediately match and take.")


def rejected() -> ApiError:
    return ApiError(400, -2010, "New order rejected.")


def duplicate_client_id() -> ApiError:
    return ApiError(400, -2010, "Duplicate order sent.")


def unknown_order() -> ApiError:
    return ApiError(400, -2011, "Unknown order sent.")


def order_missing() -> ApiError:
    return ApiError(400, -2013, "Order does not exist.")


def bad_param(msg: str) -> ApiError:
    return ApiError(400, -1100, msg)


def too_many_requests() -> ApiError:
    return ApiError(429, -1003, "Too many requests; current limit is 6000 request weight per 1 MINUTE.")
