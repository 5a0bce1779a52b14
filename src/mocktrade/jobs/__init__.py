"""The execution and persistence jobs: plain async handlers plus runners."""
