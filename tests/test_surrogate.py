"""Surrogate gradients: hand-written backward == autograd of the smooth primitive."""
import pytest
import torch

from spiking_attention import surrogate as sg

torch.set_num_threads(1)
NAMES = sorted(sg.SURROGATES)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("alpha", [None, 0.7, 3.0])
def test_backward_equals_autograd_of_primitive(name, alpha):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(257, generator=g, dtype=torch.float64) * 1.5
    mod = sg.get_surrogate(name, alpha)
    # autograd Function's backward
    xa = x.clone().requires_grad_(True)
    w = torch.randn(257, generator=g, dtype=torch.float64)
    (mod(xa) * w).sum().backward()
    # autograd of the primitive
    xb = x.clone().requires_grad_(True)
    (mod.primitive(xb) * w).sum().backward()
    assert torch.allclose(xa.grad, xb.grad, rtol=1e-10, atol=1e-12)
    # and the pure function agrees with both
    assert torch.allclose(mod.grad(x) * w, xb.grad, rtol=1e-10, atol=1e-12)
    # the gradient is not trivially zero near the threshold
    assert xa.grad[x.abs() < 0.1].abs().min() > 0


@pytest.mark.parametrize("name", NAMES)
def test_forward_is_heaviside_and_primitive_is_a_step_approximation(name):
    x = torch.tensor([-2.0, -1e-3, 0.0, 1e-3, 2.0], dtype=torch.float64)
    mod = sg.get_surrogate(name)
    assert mod(x).tolist() == [0.0, 0.0, 1.0, 1.0, 1.0]
    p = mod.primitive(torch.tensor([-50.0, 0.0, 50.0], dtype=torch.float64))
    assert p[0] < 0.02 and abs(p[1] - 0.5) < 1e-12 and p[2] > 0.98


@pytest.mark.parametrize("name", NAMES)
def test_surrogate_grad_integrates_to_one(name):
    # every primitive rises 0 -> 1, so the derivative's integral is the step's jump
    x = torch.linspace(-2000, 2000, 2_000_001, dtype=torch.float64)
    integral = torch.trapezoid(sg.get_surrogate(name).grad(x), x)
    assert abs(integral.item() - 1.0) < 2e-3


def test_spike_function_and_registry_errors():
    x = torch.tensor([-1.0, 1.0], requires_grad=True)
    s = sg.spike(x, "sigmoid", alpha=4.0)
    s.sum().backward()
    assert torch.allclose(x.grad, sg.sigmoid_grad(x.detach(), 4.0))
    with pytest.raises(ValueError, match="unknown surrogate"):
        sg.spike(x, "nope")
    with pytest.raises(ValueError, match="alpha"):
        sg.get_surrogate("atan", -1.0)
    assert sg.DEFAULT_ALPHA["atan"] == 2.0 and sg.DEFAULT_ALPHA["sigmoid"] == 4.0
