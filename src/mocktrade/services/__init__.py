"""One module per service of the reference architecture; each depends on ports only."""
