"""Monitoring: account state from the exchange (watcher, stores), and the maths over it (metrics, equity curve,
position history, strategy report). The Dagster assets and the web monitor are thin layers over these modules."""
