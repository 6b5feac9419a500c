"""Symbol names: files and the exchange use Binance names (BTCUSDT), strategies use `btc-usdt`."""

from __future__ import annotations

QUOTE_ASSETS = ("USDT", "BUSD", "USDC")


def to_strategy(symbol: str) -> str:
    """BTCUSDT -> btc-usdt."""
    upper = symbol.upper()
    for quote in QUOTE_ASSETS:
        if upper.endswith(quote) and len(upper) > len(quote):
            return f"{upper[: -len(quote)].lower()}-{quote.lower()}"
    raise ValueError(f"symbol {symbol!r} does not end in a known quote asset {QUOTE_ASSETS}")


def to_exchange(name: str) -> str:
    """btc-usdt -> BTCUSDT (an exchange name passes through unchanged)."""
    base, sep, quote = name.partition("-")
    if not sep:
        return name.upper()
    if not base or quote.upper() not in QUOTE_ASSETS:
        raise ValueError(f"strategy symbol {name!r} must look like 'btc-usdt'")
    return f"{base}{quote}".upper()
