"""A Binance USDⓈ-M compatible exchange on loopback: market model, REST, streams, trading engine, faults."""
