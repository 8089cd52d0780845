import torch

from yolact_d2.layers import is_tracing


def test_is_tracing_only_while_a_graph_is_recorded():
    seen = []

    def f(x):
        seen.append(is_tracing())
        return x * 2

    f(torch.ones(2))
    traced = torch.jit.trace(f, torch.ones(2), check_trace=False)  # records f once
    torch.testing.assert_close(traced(torch.ones(2)), torch.full((2,), 2.0))
    assert seen == [False, True]
