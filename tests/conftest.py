"""Test-wide settings.

Eight host devices let the sharding tests build real meshes on one CPU; the
flag must be set before jax is first imported, hence here.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("KERAS_BACKEND", "jax")

import pytest
from hypothesis import HealthCheck, settings

# JAX compiles on first call, so per-example deadlines measure the compiler.
settings.register_profile(
  "flipconv",
  deadline=None,
  max_examples=30,
  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
  print_blob=True,
)
# CI draws the same examples on every run (as Hypothesis' own "ci" profile does), so a
# landing is not decided by a lucky draw; local runs keep exploring new ones.
settings.register_profile("flipconv-ci", settings.get_profile("flipconv"), derandomize=True)
_ci = os.environ.get("CI", "").lower() in ("1", "true")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "flipconv-ci" if _ci else "flipconv"))

# --doctest-modules imports every module under the test paths; this helper of
# test_docs.py needs Sybil, which test_docs.py skips cleanly without.
collect_ignore = ["_docblocks.py"]


@pytest.fixture(scope="module")
def cheap_compiles():
  """Unoptimised XLA compiles for a module's tests (``pytestmark = pytest.mark.usefixtures(
  "cheap_compiles")``): tiny arrays, and compile time is most of the run time."""
  import jax

  before = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", before)
