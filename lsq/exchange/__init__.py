"""Exchange access shared by every stage: clients, typed views of account state, symbol rules, the user stream."""

from lsq.exchange.clients import (
    RetryingClient,
    account_client,
    async_rest_client,
    find_account,
    rest_client,
    resync_clock,
    socket_manager,
)

__all__ = [
    "RetryingClient",
    "account_client",
    "async_rest_client",
    "find_account",
    "rest_client",
    "resync_clock",
    "socket_manager",
]
