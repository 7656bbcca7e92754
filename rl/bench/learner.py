"""GPU check of the learner path: TRL's GRPOTrainer with its built-in transformers
rollouts (no vLLM, no Ray), LoRA, and the KL pass, on a randomly initialised model
shaped like Qwen2.5-0.5B or -1.5B, so it needs no hub. Prints tokens/s and the
model FLOP utilisation (MFU) of the update.

    python -m rl.bench.learner --shape qwen2.5-0.5b --shape qwen2.5-1.5b   # on CUDA
    python -m rl.bench.learner --shape tiny --steps 2                      # CPU smoke (CI)

Deviation from the real models: the tokenizer is a word-level vocabulary of
placeholder tokens ("t123") of the shape's exact vocab size, so embedding and
LM-head costs are the real ones; prompts are random tokens and every completion is
forced to --max-tokens (min_new_tokens), so lengths are fixed and comparable.

FLOPs of the update (forward + backward of the GRPO loss), per sequence of s tokens
of which c are completion tokens, N_body = decoder-layer parameters (rl/tools/plan.py):
    4 * N_body * s          frozen weights: forward 2N + input gradients 2N (LoRA
                            leaves no weight gradients for them; LoRA's own ~6 x 0.5%
                            of N is left out)
  + 4 * vocab * hidden * c  LM head, applied to completion tokens only (TRL)
  + 12 * layers * q_dim * s^2   attention scores and values, forward + backward
                            (PaLM's count, not halved for the causal mask)
MFU = those FLOPs / update seconds / the card's dense bf16 peak (H100 / H200 SXM:
989 TFLOP/s) or, on other devices, a matmul measured in the same run. The
conventional full fine-tuning figure, 6 x all params x tokens, is printed beside it.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings

from rl.learn.trl_bridge import wrap_stage
from rl.tools.plan import KNOWN_SHAPES, ModelShape

SHAPES: dict[str, ModelShape] = {
    # head_dim 32: small enough for 2 CPU cores in seconds; vocab 512 keeps the LM head cheap
    "tiny": ModelShape("tiny", hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=128,
                       vocab_size=512, tie_word_embeddings=True),
    **{name.split("/")[-1].lower().removesuffix("-instruct"): shape for name, shape in KNOWN_SHAPES.items()},
}
# Dense (no sparsity) bf16 tensor-core peaks from NVIDIA's data sheets; matched on the device name.
PEAK_BF16 = [("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989e12), ("H200", 989e12),
             ("GH200", 989e12), ("A100", 312e12), ("L40S", 362e12)]


def peak_flops(device: str, dtype) -> tuple[float, str]:
    """(FLOP/s, where the number comes from) for this device and dtype."""
    import torch

    if device == "cuda":
        name = torch.cuda.get_device_name(0)
        if dtype == torch.bfloat16:
            for key, value in PEAK_BF16:
                if key.lower() in name.lower():
                    return value, f"{name}: data-sheet dense bf16 peak"
        return measured_matmul_flops(device, dtype), f"{name}: measured {dtype} matmul (not in the data-sheet table)"
    return measured_matmul_flops(device, dtype), f"CPU: measured {str(dtype).split('.')[-1]} matmul"


def measured_matmul_flops(device: str, dtype, n: int | None = None, reps: int = 3) -> float:
    import torch

    n = n or (8192 if device == "cuda" else 1024)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    _sync(device)
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - start)


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def build_tokenizer(vocab_size: int):
    """A word-level tokenizer with exactly ``vocab_size`` ids: <pad>, <eos>, t2 ... t{V-1}."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, **{f"t{i}": i for i in range(2, vocab_size)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")


def build_model(shape: ModelShape, dtype, device: str):
    """Random weights in the shape's layout (Qwen2 architecture), made directly on the device."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=shape.vocab_size, hidden_size=shape.hidden_size, intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_layers, num_attention_heads=shape.num_heads,
        num_key_value_heads=shape.num_kv_heads, tie_word_embeddings=shape.tie_word_embeddings,
        max_position_embeddings=4096, bos_token_id=1, eos_token_id=1, pad_token_id=0,
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2ForCausalLM(config).to(dtype)
    return model


def update_flops(shape: ModelShape, seq_lens: list[int], completion_lens: list[int]) -> float:
    """FLOPs of forward + backward of the LoRA update for these sequences (module docstring)."""
    q_dim = shape.num_heads * shape.head_size
    body = 4 * shape.body_params() * sum(seq_lens)
    head = 4 * shape.vocab_size * shape.hidden_size * sum(completion_lens)
    attention = 12 * shape.num_layers * q_dim * sum(s * s for s in seq_lens)
    return float(body + head + attention)


def run_bench(shape_name: str, steps: int = 3, warmup: int = 1, prompts: int = 16, n: int = 8,
              prompt_len: int = 128, max_tokens: int = 256, micro_batch: int = 16, beta: float = 0.001,
              gradient_checkpointing: bool = False, lora_r: int = 16, device: str | None = None) -> dict:
    """Train ``warmup + steps`` GRPO steps; figures are averaged over the last ``steps``."""
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    warnings.filterwarnings("ignore", message="TRL currently supports vLLM")
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import PrinterCallback, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    shape = SHAPES[shape_name]
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    completions = prompts * n
    if completions % micro_batch:
        raise ValueError(f"--prompts x --n = {completions} must be a multiple of --micro-batch {micro_batch}")

    tokenizer = build_tokenizer(shape.vocab_size)
    model = build_model(shape, dtype, device)
    rng = torch.Generator().manual_seed(0)
    rows = [{"prompt": " ".join(f"t{int(t)}" for t in torch.randint(2, shape.vocab_size, (prompt_len,), generator=rng))}
            for _ in range(prompts * (warmup + steps))]

    def reward(completions, **_):  # varies within a group, so advantages are not all zero
        return [len(set(c.split())) / max(1, len(c.split())) for c in completions]

    stats = {"gen": [], "gen_score": [], "step": [], "seq_lens": [], "completion_lens": []}

    class StepClock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            if not hasattr(self, "last"):
                _sync(device)
                self.last = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            _sync(device)
            now = time.perf_counter()
            stats["step"].append(now - self.last)
            self.last = now

    with tempfile.TemporaryDirectory() as out:
        args = GRPOConfig(
            output_dir=out, report_to=[], save_strategy="no", logging_steps=1, disable_tqdm=True,
            per_device_train_batch_size=micro_batch, gradient_accumulation_steps=completions // micro_batch,
            num_generations=n, max_completion_length=max_tokens, temperature=1.0,
            generation_kwargs={"min_new_tokens": max_tokens},  # fixed lengths: no early EOS
            beta=beta, loss_type="grpo", learning_rate=1e-5, max_steps=warmup + steps, seed=0,
            bf16=dtype == torch.bfloat16, use_cpu=device == "cpu", gradient_checkpointing=gradient_checkpointing,
            remove_unused_columns=False, dataloader_num_workers=0,
        )
        lora = LoraConfig(r=lora_r, lora_alpha=2 * lora_r, target_modules=list(shape.module_dims()),
                          task_type="CAUSAL_LM")
        trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=args, processing_class=tokenizer,
                              train_dataset=Dataset.from_list(rows), peft_config=lora)
        _time_stage(trainer, "generate_single_turn", stats["gen"], device)
        _time_stage(trainer, "generate_and_score", stats["gen_score"], device)

        def counting(inner):  # keep each step's sequence lengths for the FLOP count
            def counted(*a, **kw):
                batch = inner(*a, **kw)
                p = batch["prompt_mask"].sum(1).tolist()
                c = batch["completion_mask"].sum(1).tolist()
                stats["seq_lens"].append([int(x + y) for x, y in zip(p, c)])
                stats["completion_lens"].append([int(y) for y in c])
                return batch

            return counted

        wrap_stage(trainer, "generate_and_score", counting)
        trainer.add_callback(StepClock())
        trainer.remove_callback(PrinterCallback)  # TRL's per-step log dicts; we print a summary
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        trainer.train()

    keep = slice(warmup, warmup + steps)
    step_s = sum(stats["step"][keep]) / steps
    gen_s = sum(stats["gen"][keep]) / steps
    score_s = sum(stats["gen_score"][keep]) / steps - gen_s
    update_s = step_s - gen_s - score_s
    seq = [s for lens in stats["seq_lens"][keep] for s in lens]
    comp = [c for lens in stats["completion_lens"][keep] for c in lens]
    flops = update_flops(shape, seq, comp) / steps
    peak, peak_from = peak_flops(device, dtype)
    return {
        "shape": shape_name, "device": device, "dtype": str(dtype).split(".")[-1],
        "device_name": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "params": shape.params(), "steps": steps, "sequences_per_step": len(seq) / steps,
        "step_s": step_s, "generation_s": gen_s, "score_s": score_s, "update_s": update_s,
        "generation_tok_s": sum(comp) / steps / gen_s,
        "update_tok_s": sum(seq) / steps / update_s,
        "step_tok_s": sum(seq) / steps / step_s,
        "update_flops": flops, "update_tflop_s": flops / update_s / 1e12,
        "peak_flops": peak, "peak_from": peak_from,
        "mfu": flops / update_s / peak,
        "mfu_6n": 6 * shape.params() * sum(seq) / steps / update_s / peak,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None,
    }


def _time_stage(trainer, stage: str, sink: list[float], device: str):
    """Append the seconds of each call of one of TRL's stages (rl/learn/trl_bridge.py: STAGES) to ``sink``."""

    def timing(inner):
        def timed(*a, **kw):
            _sync(device)
            start = time.perf_counter()
            out = inner(*a, **kw)
            _sync(device)
            sink.append(time.perf_counter() - start)
            return out

        return timed

    return wrap_stage(trainer, stage, timing)


def report(r: dict) -> str:
    mem = f", peak memory {r['peak_memory_gib']:.1f} GiB" if r["peak_memory_gib"] is not None else ""
    return "\n".join([
        f"[learner] {r['shape']} ({r['params'] / 1e6:.1f}M params, random init) on {r['device_name']}, {r['dtype']}{mem}",
        f"  step {r['step_s']:.2f}s = generation {r['generation_s']:.2f}s + scoring/ref {r['score_s']:.2f}s "
        f"+ update {r['update_s']:.2f}s   ({r['sequences_per_step']:.0f} sequences per step)",
        f"  tokens/s: generation {r['generation_tok_s']:,.0f} (new tokens), update {r['update_tok_s']:,.0f}, "
        f"whole step {r['step_tok_s']:,.0f}",
        f"  update {r['update_tflop_s']:.2f} TFLOP/s of {r['peak_flops'] / 1e12:.2f} ({r['peak_from']}): "
        f"MFU {r['mfu']:.2%} (LoRA count 4N + head + attention); 6N convention {r['mfu_6n']:.2%}",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", action="append", choices=sorted(SHAPES),
                        help="repeatable; default: qwen2.5-0.5b and qwen2.5-1.5b on CUDA, tiny on CPU")
    parser.add_argument("--steps", type=int, default=3, help="measured GRPO steps (after --warmup)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--prompts", type=int, default=None, help="prompts per step (default 16; tiny: 2)")
    parser.add_argument("--n", type=int, default=None, help="samples per prompt (default 8; tiny: 2)")
    parser.add_argument("--prompt-len", type=int, default=None, help="prompt tokens (default 128; tiny: 8)")
    parser.add_argument("--max-tokens", type=int, default=None, help="completion tokens (default 256; tiny: 8)")
    parser.add_argument("--micro-batch", type=int, default=None, help="sequences per forward/backward (default 16)")
    parser.add_argument("--beta", type=float, default=0.001, help="KL coefficient (R1-T1's); 0 skips the reference pass")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--device", choices=["cuda", "cpu"], default=None)
    args = parser.parse_args(argv)

    import torch

    try:  # the learner path itself; a bare GPU image may lack them
        import datasets  # noqa: F401
        import peft  # noqa: F401
        import trl  # noqa: F401
    except ImportError as exc:
        print(f"error: the learner bench runs TRL's GRPOTrainer and needs trl, peft and datasets ({exc}); "
              "pip install 'trl==1.16.0' peft datasets", file=sys.stderr)
        return 2
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA device is visible", file=sys.stderr)
        return 2
    shapes = args.shape or (["qwen2.5-0.5b", "qwen2.5-1.5b"] if device == "cuda" else ["tiny"])
    for name in shapes:
        tiny = name == "tiny"
        settings = dict(
            prompts=args.prompts or (2 if tiny else 16), n=args.n or (2 if tiny else 8),
            prompt_len=args.prompt_len or (8 if tiny else 128), max_tokens=args.max_tokens or (8 if tiny else 256),
        )
        settings["micro_batch"] = args.micro_batch or min(16, settings["prompts"] * settings["n"])
        print(f"[learner] {name}: {settings['prompts']} prompts x {settings['n']} samples, prompt "
              f"{settings['prompt_len']} + completion {settings['max_tokens']} tokens, micro-batch "
              f"{settings['micro_batch']}, beta {args.beta}, {args.warmup} warmup + {args.steps} measured steps", flush=True)
        result = run_bench(name, steps=args.steps, warmup=args.warmup, beta=args.beta,
                           gradient_checkpointing=args.gradient_checkpointing, device=device, **settings)
        print(report(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
