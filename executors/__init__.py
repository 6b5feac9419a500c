"""Order execution toward target positions (Market, TWAP, VWAP): not built yet, no issue filed for it so far."""
