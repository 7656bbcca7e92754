"""The "hf" backend: transformers ``generate`` with a PEFT adapter, for machines
where vLLM cannot run. Same outputs as the vLLM backends: logprobs come from
the processed scores (after temperature, top-k, top-p), EOS stays in the token
ids, text stops before a stop string."""
from __future__ import annotations

from typing import Sequence

from rl.core.config import LoraSettings, RolloutConfig, SamplingConfig, torch_dtype
from rl.rollout.base import Completion, PromptResult, check_adapter, check_sampling, tokenize_prompts

SCORES_BUDGET_BYTES = 1 << 30  # output_scores keeps (rows x steps x vocab) floats: batch to stay under this


class HFEngine:
    def __init__(self, model_path: str, rollout: RolloutConfig, lora: LoraSettings | None = None, seed: int = 0):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model_path, self.rollout, self.seed = str(model_path), rollout, seed
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=torch_dtype(rollout.dtype)).to(self.device)
        self.model.eval()
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        eos = self.model.generation_config.eos_token_id
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        if self.tokenizer.eos_token_id is not None and self.tokenizer.eos_token_id not in eos:
            eos.append(self.tokenizer.eos_token_id)
        self.eos_ids = eos
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos[0]
        self._version: int | None = None
        self._adapter_count = 0

    # --------------------------------------------------------------- generation
    def generate(self, prompts: Sequence[str] | Sequence[Sequence[int]], sampling: SamplingConfig) -> list[PromptResult]:
        check_sampling(sampling)
        ids = tokenize_prompts(self.tokenizer, prompts)
        rows_per_prompt = sampling.n * sampling.max_tokens * len(self.tokenizer) * 4
        step = max(1, SCORES_BUDGET_BYTES // rows_per_prompt)
        out = []
        for lo in range(0, len(ids), step):
            seed = None if sampling.seed is None else sampling.seed + lo * sampling.n
            out += self._generate_batch(ids[lo:lo + step], sampling, seed)
        return out

    def _generate_batch(self, batch: list[list[int]], sampling: SamplingConfig, seed: int | None) -> list[PromptResult]:
        import torch
        from transformers import GenerationConfig

        width = max(len(p) for p in batch)
        input_ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros_like(input_ids)
        for i, p in enumerate(batch):  # left padding
            input_ids[i, width - len(p):] = torch.tensor(p)
            attention[i, width - len(p):] = 1
        gen = dict(max_new_tokens=sampling.max_tokens, num_return_sequences=sampling.n, pad_token_id=self.pad_id,
                   eos_token_id=self.eos_ids, output_scores=True, return_dict_in_generate=True,
                   do_sample=sampling.temperature > 0)
        if gen["do_sample"]:
            gen.update(temperature=sampling.temperature, top_p=sampling.top_p,
                       top_k=sampling.top_k if sampling.top_k > 0 else 0)
        if getattr(sampling, "ignore_eos", False):
            gen["min_new_tokens"] = sampling.max_tokens
        extra = {}
        if sampling.stop:
            gen["stop_strings"] = list(sampling.stop)
            extra["tokenizer"] = self.tokenizer
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            res = self.model.generate(input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device),
                                      generation_config=GenerationConfig(**gen), **extra)
        seqs = res.sequences[:, width:].cpu()
        logps = torch.stack([torch.log_softmax(s.float(), -1).gather(-1, seqs[:, t:t + 1]).squeeze(-1).cpu()
                             for t, s in enumerate(res.scores)], 1)
        results = []
        for i, prompt in enumerate(batch):
            comps = [self._completion(seqs[j].tolist(), logps[j].tolist(), sampling)
                     for j in range(i * sampling.n, (i + 1) * sampling.n)]
            results.append(PromptResult(prompt_token_ids=list(prompt), completions=comps))
        return results

    def _completion(self, tokens: list[int], logps: list[float], sampling: SamplingConfig) -> Completion:
        """Cut a padded row where it really ended: EOS (kept), a stop string, or max_tokens."""
        ignore_eos = getattr(sampling, "ignore_eos", False)
        end = next((k + 1 for k, t in enumerate(tokens) if t in self.eos_ids), None) if not ignore_eos else None
        length, reason = (end, "stop") if end is not None else (len(tokens), "length")
        decode = lambda k: self.tokenizer.decode(tokens[:k], skip_special_tokens=True)  # noqa: E731
        # vLLM's incremental detokenizer never emits a trailing incomplete UTF-8 sequence
        text = decode(length).rstrip("\ufffd")
        hits = [text.find(s) for s in sampling.stop if s in text]
        if hits:
            text, reason = text[:min(hits)], "stop"
            lo, hi = 1, length  # shortest prefix whose text holds a stop string
            while lo < hi:
                mid = (lo + hi) // 2
                if any(s in decode(mid) for s in sampling.stop):
                    hi = mid
                else:
                    lo = mid + 1
            length = lo
        return Completion(text=text, token_ids=tokens[:length], logprobs=logps[:length], finish_reason=reason)

    # --------------------------------------------------------------- adapters
    @property
    def adapter_version(self) -> int | None:
        return self._version

    def set_adapter(self, adapter_dir: str, version: int) -> None:
        from peft import PeftModel

        check_adapter(adapter_dir, self.rollout.max_lora_rank, self.model_path)
        self._adapter_count += 1
        name = f"v{version}-{self._adapter_count}"  # unique even when a version is pushed twice
        if isinstance(self.model, PeftModel):
            old = list(self.model.peft_config)
            self.model.load_adapter(adapter_dir, adapter_name=name)
            self.model.set_adapter(name)
            for other in old:  # evict: memory stays flat over many versions
                self.model.delete_adapter(other)
        else:
            self.model = PeftModel.from_pretrained(self.model, adapter_dir, adapter_name=name)
        self.model.eval()
        self._version = version

    def clear_adapter(self) -> None:
        from peft import PeftModel

        if isinstance(self.model, PeftModel):
            self.model = self.model.unload()
        self._version = None

    def shutdown(self) -> None:
        self.model = None
