"""torch.optim flags fusedlr accepts for drop-in compatibility."""


def check_torch_flags(differentiable: bool) -> None:
    """foreach/fused/capturable are accepted and ignored (fusedlr is always fused
    and capturable); differentiable optimizers are not supported."""
    if differentiable:
        raise ValueError("differentiable=True is not supported by fusedlr optimizers (the update runs in a kernel)")
