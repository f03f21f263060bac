"""The server's dense copy of a 4-bit model: each bitsandbytes `Linear4bit` becomes a plain
`nn.Linear` that holds the layer's dequantized weight.

On CPU, bitsandbytes answers every call of a 4-bit layer by dequantizing its whole weight and
then running `F.linear` on it. The copy dequantizes once, so each call is that same `F.linear` on
the same weight: the same numbers at dense speed, for the memory of a dense model. Clients keep
4-bit NF4, which is what the experiment studies; the server, which generates and scores many
more tokens than a client and is not short of memory, uses the copy (`model.server-dense`).
On a GPU the 4-bit kernels are fused and their numbers differ from a dense matmul, so the copy
is made on CPU only.
"""

from __future__ import annotations

import torch

from fedsafe.config import ModelSettings


def wanted(settings: ModelSettings, device: torch.device) -> bool:
    """Whether the server runs `settings`' model as a dense copy on `device`."""
    return settings.server_dense and settings.quantization == 4 and device.type == "cpu"


def dequantize_4bit_layers(model) -> int:
    """Replace every 4-bit linear layer of `model` in place (LoRA wrappers keep theirs as
    `base_layer`); returns how many were replaced."""
    import bitsandbytes as bnb
    from bitsandbytes.functional import dequantize_4bit

    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, bnb.nn.Linear4bit):
                continue
            # (out_features, in_features), in the dtype bitsandbytes computes in
            weight = dequantize_4bit(child.weight.data, child.weight.quant_state).to(child.compute_dtype)
            dense = torch.nn.Linear(child.in_features, child.out_features, bias=child.bias is not None,
                                    device="meta")
            dense.weight = torch.nn.Parameter(weight, requires_grad=False)
            if child.bias is not None:
                dense.bias = torch.nn.Parameter(child.bias.data.to(weight.dtype), requires_grad=False)
            dense.train(child.training)
            setattr(parent, name, dense)
            replaced += 1
    return replaced
