"""API keys and HMAC-SHA256 request signing, verified exactly as Binance does.

The signature covers the EXACT bytes received: the query string without its `signature` parameter, concatenated with
the raw body (also without `signature`, if it was sent there). Re-encoding parsed parameters would accept requests
Binance rejects (and the other way round), so nothing here re-serialises.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Mapping

from lsq.config import Account
from simulator.errors import BinanceError, bad_api_key, bad_param, bad_signature, mandatory_missing

# A key lookup answers (account_id, secret) for a known API key, else None.
KeyLookup = Callable[[str], tuple[str, str] | None]

_API_KEY_FORMAT = re.compile(r"^[A-Za-z0-9]{8,128}$")
MAX_RECV_WINDOW_MS = 60_000
DEFAULT_RECV_WINDOW_MS = 5_000
FUTURE_TOLERANCE_MS = 1_000


def malformed_api_key() -> BinanceError:
    return BinanceError(-2014, "API-key format invalid.", 401)


def static_key_lookup(accounts: Iterable[Account]) -> KeyLookup:
    """A lookup over configured accounts, for a server running without a trading engine."""
    table = {
        a.api_key.get_secret_value(): (a.account_id, a.api_secret.get_secret_value())
        for a in accounts
        if a.has_credentials and a.api_key is not None and a.api_secret is not None
    }
    return table.get


def authenticate_key(header: str | None, lookup: KeyLookup) -> tuple[str, str]:
    """(account_id, secret) for the X-MBX-APIKEY header: -2014 when absent or malformed, -2015 when unknown."""
    if not header or not _API_KEY_FORMAT.match(header):
        raise malformed_api_key()
    found = lookup(header)
    if found is None:
        raise bad_api_key()
    return found


def split_signature(raw_query: str, raw_body: str) -> tuple[str, str | None]:
    """The signed payload (query minus `signature`, then body minus `signature`) and the signature sent, if any."""
    signatures: list[str] = []

    def strip(raw: str) -> str:
        if "signature=" not in raw:
            return raw
        kept = []
        for part in raw.split("&"):
            if part.startswith("signature="):
                signatures.append(part[len("signature=") :])
            else:
                kept.append(part)
        return "&".join(kept)

    payload = strip(raw_query) + strip(raw_body)
    if len(signatures) > 1:
        raise BinanceError(-1101, "Duplicate values for a parameter detected.")
    return payload, signatures[0] if signatures else None


def sign(secret: str, payload: str) -> str:
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def verify_signature(secret: str, payload: str, signature: str | None) -> None:
    if not signature:
        raise mandatory_missing("signature")
    if not hmac.compare_digest(sign(secret, payload), signature.lower()):
        raise bad_signature()


def _int_param(params: Mapping[str, str], name: str) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise bad_param(name, raw) from None


def check_timestamp(params: Mapping[str, str], server_time_ms: int) -> None:
    """Binance's acceptance window: timestamp < serverTime + 1000 and serverTime - timestamp <= recvWindow."""
    timestamp = _int_param(params, "timestamp")
    if timestamp is None:
        raise mandatory_missing("timestamp")
    recv_window = _int_param(params, "recvWindow")
    if recv_window is None:
        recv_window = DEFAULT_RECV_WINDOW_MS
    if recv_window <= 0 or recv_window > MAX_RECV_WINDOW_MS:
        raise BinanceError(-1131, f"recvWindow must be less than {MAX_RECV_WINDOW_MS}.")
    if timestamp >= server_time_ms + FUTURE_TOLERANCE_MS:
        raise BinanceError(-1021, "Timestamp for this request was 1000ms ahead of the server's time.")
    if server_time_ms - timestamp > recv_window:
        raise BinanceError(-1021, "Timestamp for this request is outside of the recvWindow.")
