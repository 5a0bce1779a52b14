"""Backends behind the ports; `bootstrap` is the only module that picks them.

`embedded/` holds the one-process stand-ins (SQLite, chDB) used by default.
"""
