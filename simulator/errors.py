"""Binance's error shape: HTTP 4xx with {"code": -NNNN, "msg": "..."}. Every failure the simulator reports is one."""

from __future__ import annotations


class BinanceError(Exception):
    """An error answered to the client exactly as Binance would."""

    def __init__(self, code: int, msg: str, http_status: int = 400) -> None:
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg
        self.http_status = http_status

    def body(self) -> dict[str, object]:
        return {"code": self.code, "msg": self.msg}


def too_many_requests() -> BinanceError:
    return BinanceError(-1003, "Too many requests; current limit is exceeded. Please use WebSocket Streams.", 429)


def mandatory_missing(name: str) -> BinanceError:
    return BinanceError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


def bad_param(name: str, value: object) -> BinanceError:
    return BinanceError(-1100, f"Illegal characters found in parameter '{name}'; legal range is given. Got {value!r}.")


def invalid_symbol() -> BinanceError:
    return BinanceError(-1121, "Invalid symbol.")


def bad_signature() -> BinanceError:
    return BinanceError(-1022, "Signature for this request is not valid.")


def bad_api_key() -> BinanceError:
    return BinanceError(-2015, "Invalid API-key, IP, or permissions for action.", 401)


def unknown_order() -> BinanceError:
    return BinanceError(-2013, "Order does not exist.")
