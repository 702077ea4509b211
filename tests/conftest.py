import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import hdc
from hdc.backends import BackendUnavailable, load_backend

# CI gets more examples; local runs stay quick.
settings.register_profile("ci", max_examples=60, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile("dev", max_examples=25, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile("ci" if os.environ.get("CI") else "dev")


def _kernel_targets():
    """(backend name, ISA level or None) for every backend and C ISA level on this machine."""
    targets = [("numpy", None)]
    try:
        load_backend("numba")
        targets.append(("numba", None))
    except BackendUnavailable:
        pass
    try:
        c = load_backend("c")
        targets += [("c", isa) for isa in c.isa_levels()]
    except BackendUnavailable:
        pass
    return targets


KERNEL_TARGETS = _kernel_targets()


@pytest.fixture(params=KERNEL_TARGETS, ids=lambda t: t[0] + (f"-{t[1]}" if t[1] else ""))
def kernel(request):
    """Run the test on one backend (and C ISA level); yields the backend module."""
    name, isa = request.param
    with hdc.use_backend(name) as mod:
        if isa is None:
            yield mod
            return
        previous = mod.get_isa()
        mod.set_isa(isa)
        try:
            yield mod
        finally:
            mod.set_isa(previous)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
