from tests.engines import real_engines  # noqa: F401  (session fixture for every suite)

from hypothesis import settings as _hypothesis_settings  # noqa: E402

# No per-example deadline: a test asserts behaviour, never time (a loaded CI
# machine makes any deadline flaky); speed is for bench/.
_hypothesis_settings.register_profile("mocktrade", deadline=None)
_hypothesis_settings.load_profile("mocktrade")
