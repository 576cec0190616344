"""Tiny random models for tests (importable from test modules; pytest puts tests/ on sys.path)."""

import torch


def make_tiny_refiner(in_ch: int = 5, input_size: int = 256, seed: int = 0):
    """A tiny random refiner whose BatchNorm statistics are not the identity (so folding is exercised)."""
    from is5net.checkpoint import RefinerConfig
    from is5net.modeling import build_model

    torch.manual_seed(seed)
    model = build_model("is5net_tiny" if in_ch == 5 else "isnet_tiny")
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(2, in_ch, 64, 64))
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    model.eval()
    model.config = RefinerConfig.for_model(model, input_size=input_size)
    return model
