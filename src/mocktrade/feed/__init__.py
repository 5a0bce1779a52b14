"""The simulated exchange: a price simulator, its WebSocket feed and the feed's parsers."""
