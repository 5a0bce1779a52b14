from tests.engines import real_engines  # noqa: F401  (session fixture for every suite)
