"""LSQ's shared building blocks: configuration, symbols, time labels, storage paths and schemas."""
