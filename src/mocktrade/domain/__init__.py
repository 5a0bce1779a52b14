"""The functional core: pure values and decisions, no I/O."""
