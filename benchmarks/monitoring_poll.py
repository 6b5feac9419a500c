"""Poll the simulator's own account view alongside a running system, for benchmarks/monitoring_check.py.

Every `--interval` seconds each mock account's GET /fapi/v3/account (signed with the mock keys of the config) is
recorded as one JSON line: local time before and after the request, totalWalletBalance, totalUnrealizedProfit and
totalMarginBalance (= equity). Standard library only, so it runs beside any checkout.

    python benchmarks/monitoring_poll.py --config hour.yaml --out poll.jsonl [--interval 1]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml


def signed_get(base: str, path: str, key: str, secret: str, params: dict[str, Any]) -> Any:
    """A signed Binance GET (HMAC-SHA256 over the query string)."""
    query = urllib.parse.urlencode({**params, "timestamp": int(time.time() * 1000), "recvWindow": 10_000})
    signature = hmac.new(secret.encode(), query.encode(), hashlib.sha256).hexdigest()
    request = urllib.request.Request(f"{base}{path}?{query}&signature={signature}", headers={"X-MBX-APIKEY": key})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def mock_accounts(config: Path) -> tuple[str, list[dict[str, Any]]]:
    """The mock REST url and accounts (id, key, secret) of a config file."""
    raw = yaml.safe_load(config.read_text())
    return raw["binance"]["mock"]["rest_url"].rstrip("/"), raw["execution"]["mock"]["accounts"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args()
    base, accounts = mock_accounts(args.config)
    with args.out.open("a") as out:
        while True:
            for account in accounts:
                before = int(time.time() * 1000)
                try:
                    body = signed_get(base, "/fapi/v3/account", account["api_key"], account["api_secret"], {})
                except OSError as exc:
                    print(f"{account['account_id']}: {exc}", flush=True)
                    continue
                after = int(time.time() * 1000)
                row = {
                    "account_id": account["account_id"],
                    "before_ms": before,
                    "after_ms": after,
                    "wallet": body["totalWalletBalance"],
                    "upnl": body["totalUnrealizedProfit"],
                    "equity": body["totalMarginBalance"],
                }
                out.write(json.dumps(row) + "\n")
            out.flush()
            time.sleep(args.interval)


if __name__ == "__main__":
    main()
