"""One shim for TRL's fused LM head on CPU (trl 1.16).

TRL scores the policy's tokens with a chunked log-prob kernel. On Triton devices
(CUDA, XPU) it scores only the positions that carry a label: the completion
tokens. Everywhere else it scores every position, prompt and padding included,
because on Neuron a varying number of positions recompiles the graph. CPU has no
graph to recompile, and on the toy recipe (prompts of ~105 tokens, completions
padded to 96, ~25 real) that means ~8x the LM-head work: about 60% of a GRPO
learner step. The shim makes CPU take TRL's own "compact" branch; the kernel
itself (torch ops on CPU) is unchanged, so the numbers are the same.
"""
from __future__ import annotations

import torch


def score_only_completion_tokens_on_cpu(enable: bool = True) -> bool:
    """Patch ``trl.trainer.utils._use_triton`` (read by the fused forward at call
    time to choose the compact branch) to answer True for CPU tensors. The kernel
    module keeps its own ``_use_triton``, so CPU still runs torch ops, not Triton.
    ``enable=False`` puts TRL's own back (the step benchmark's plain-TRL baseline).
    Returns whether the patch is in place; False when this TRL has no such hook."""
    import trl.trainer.utils as trl_utils

    current = getattr(trl_utils, "_use_triton", None)
    if current is None:
        return False
    original = getattr(current, "trl_original", current)
    if not enable:
        trl_utils._use_triton = original
        return False
    if original is current:
        def use_compact(device: torch.device) -> bool:
            return device.type == "cpu" or original(device)

        use_compact.trl_original = original
        trl_utils._use_triton = use_compact
    return True
