"""Rollouts (issue 4): on-policy logprobs, ordering, seeds, stops, truncation,
worker faults, adapter validation/eviction, and agreement of the three backends.

Runs on a tiny random Qwen2 (head_dim 64) with random non-zero LoRA adapters;
one Ray pool (2 workers), one in-process vLLM engine and one HF engine for the
whole session."""
from __future__ import annotations

import dataclasses
import shutil
import threading
import time

import pytest
import torch

from helpers_models import build_random_qwen2, build_tiny_qwen2, save_random_lora
from rl.core.config import LoraSettings, RolloutConfig, SamplingConfig
from rl.rollout import AdapterError, make_rollout_engine

# fp32 engine vs fp32 PEFT forward: measured max |diff| ~2e-5 here; the bound leaves room
# for kernel differences while a stale adapter is off by > 0.1 nats on average.
LOGPROB_TOL = 1e-4
ROLLOUT = RolloutConfig(num_workers=2, dtype="float32", max_lora_rank=8, enforce_eager=True, max_model_len=512,
                        cpu_kv_cache_gb=1, max_failures=3)
WORDS = "bada kemo sifu lorin tamek vopu zenda rigo muna pelo".split()


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    return build_tiny_qwen2(tmp_path_factory.mktemp("tiny_qwen2"))


@pytest.fixture(scope="session")
def adapters(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    return {"a": str(save_random_lora(tiny_model, root / "a", r=8, seed=1)),
            "b": str(save_random_lora(tiny_model, root / "b", r=8, seed=2))}


@pytest.fixture(scope="session")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


@pytest.fixture(scope="module")  # frees its CPUs for the later modules' pools
def pool(ray_cluster, tiny_model):
    engine = make_rollout_engine(str(tiny_model), dataclasses.replace(ROLLOUT, backend="ray-vllm"), LoraSettings(r=8))
    yield engine
    engine.shutdown()


@pytest.fixture(scope="module")  # frees its CPUs for the later modules' pools
def vllm_engine(tiny_model):
    engine = make_rollout_engine(str(tiny_model), dataclasses.replace(ROLLOUT, backend="vllm"), LoraSettings(r=8))
    yield engine
    engine.shutdown()


@pytest.fixture(scope="session")
def hf_engine(tiny_model):
    engine = make_rollout_engine(str(tiny_model), dataclasses.replace(ROLLOUT, backend="hf"), LoraSettings(r=8))
    yield engine
    engine.shutdown()


BACKENDS = {"ray-vllm": "pool", "vllm": "vllm_engine", "hf": "hf_engine"}


@pytest.fixture(params=list(BACKENDS))
def engine(request):
    return request.getfixturevalue(BACKENDS[request.param])


def chat_prompts(tokenizer, count: int) -> list[str]:
    """Distinct chat-templated prompts of varied length."""
    return [tokenizer.apply_chat_template(
        [{"role": "user", "content": " ".join(WORDS[(i + j) % len(WORDS)] for j in range(2 + i % 5))}],
        tokenize=False, add_generation_prompt=True) for i in range(count)]


def token_ids(results) -> list[list[list[int]]]:
    return [[c.token_ids for c in r.completions] for r in results]


def peft_model(tiny_model, adapter_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    return (PeftModel.from_pretrained(base, adapter_dir) if adapter_dir else base).eval()


@torch.no_grad()
def reference_logprobs(model, results, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(engine logprobs, model logprobs) of every sampled token, flattened."""
    got, want = [], []
    for r in results:
        for c in r.completions:
            ids = torch.tensor([r.prompt_token_ids + c.token_ids])
            logits = model(ids).logits[0, len(r.prompt_token_ids) - 1:-1].float() / temperature
            want.append(torch.log_softmax(logits, -1).gather(-1, torch.tensor(c.token_ids)[:, None])[:, 0])
            got.append(torch.tensor(c.logprobs))
    return torch.cat(got), torch.cat(want)


# ----------------------------------------------------------------------------- on-policy
def test_on_policy_logprobs_match_peft_and_stale_policy_is_detected(pool, tiny_model, adapters, tokenizer):
    sampling = SamplingConfig(n=4, temperature=0.8, max_tokens=24, seed=11)
    prompts = chat_prompts(tokenizer, 6)
    model_a, model_b = peft_model(tiny_model, adapters["a"]), peft_model(tiny_model, adapters["b"])

    pool.set_adapter(adapters["a"], version=1)
    assert all(info["lora_fast_path"] for info in pool.worker_info())  # rl/rollout/vllm_cpu_lora.py is what we test
    results = pool.generate(prompts, sampling)
    got, want = reference_logprobs(model_a, results, sampling.temperature)
    diff = (got - want).abs().max().item()
    print(f"on-policy max |logprob diff| = {diff:.2e} over {got.numel()} tokens")
    assert diff < LOGPROB_TOL

    # The learner moved to adapter B but the workers were not synced: visibly off-policy.
    _, want_b = reference_logprobs(model_b, results, sampling.temperature)
    assert (got - want_b).abs().mean().item() > 0.1
    _, want_base = reference_logprobs(peft_model(tiny_model, None), results, sampling.temperature)
    assert (got - want_base).abs().mean().item() > 0.1

    pool.set_adapter(adapters["b"], version=2)
    assert pool.adapter_version == 2
    results = pool.generate(prompts, sampling)
    got, want = reference_logprobs(model_b, results, sampling.temperature)
    assert (got - want).abs().max().item() < LOGPROB_TOL


def test_cpu_lora_fast_path_computes_what_vllm_ops_compute():
    from vllm.lora.ops.torch_ops import lora_ops

    from rl.rollout.vllm_cpu_lora import install

    assert install()
    slow_shrink, slow_expand, slow_slice = lora_ops._r1t1_vllm_ops
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 32, generator=gen)
    a = torch.randn(2, 1, 8, 32, generator=gen)  # (slots, 1, rank, in)
    b = torch.randn(2, 1, 48, 8, generator=gen)  # (slots, 1, out, rank)
    for idx in (torch.ones(6, dtype=torch.long), torch.tensor([0, 1, 1, 0, -1, 1])):  # one adapter; mixed
        fast_y, slow_y = torch.zeros(6, 8), torch.zeros(6, 8)
        lora_ops.bgmv_shrink(x, a, fast_y, idx, 0.5)
        slow_shrink(x, a, slow_y, idx, 0.5)
        assert torch.allclose(fast_y, slow_y, atol=1e-5)
        base = torch.randn(6, 64, generator=gen)
        fast_o, slow_o = base.clone(), base.clone()
        lora_ops.bgmv_expand(fast_y, b, fast_o, idx, True)
        slow_expand(slow_y, b, slow_o, idx, True)
        assert torch.allclose(fast_o, slow_o, atol=1e-5)
        fast_s, slow_s = base.clone(), base.clone()
        lora_ops.bgmv_expand_slice(fast_y, b, fast_s, idx, 8, 48, True)
        slow_slice(slow_y, b, slow_s, idx, 8, 48, True)
        assert torch.allclose(fast_s, slow_s, atol=1e-5)


@pytest.mark.parametrize("mapping, is_prefill", [((7, 7, 7, 7, 7), False), ((7, 7, 7, 7, 7), True),
                                                  ((7, 3, 7, 0, 7), False)])  # one adapter; one, prefill; mixed
def test_cpu_lora_linear_direct_path_computes_what_vllm_computes(mapping, is_prefill):
    """The patched PunicaWrapperCPU.add_lora_linear (direct matmuls once the step's one slot is
    known) against vLLM's own, on a qkv-like layer of three slices, bf16 output as on the workers."""
    from vllm.lora.layers.utils import LoRAMapping
    from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

    from rl.rollout.vllm_cpu_lora import install

    assert install()
    wrapper = PunicaWrapperCPU(64, 8, "cpu")
    lora_index_to_id = [7, 3]  # slot 0 holds adapter 7, slot 1 adapter 3; id 0 means no adapter
    wrapper.update_metadata(LoRAMapping(mapping, mapping, is_prefill=is_prefill), lora_index_to_id, 2, 100)
    single = len(set(mapping)) == 1
    assert (wrapper._r1t1_slot is not None) == single
    gen = torch.Generator().manual_seed(0)
    slices = (48, 16, 16)
    x = torch.randn(len(mapping), 32, generator=gen).to(torch.bfloat16)
    a = tuple(torch.randn(2, 1, 8, 32, generator=gen).to(torch.bfloat16) for _ in slices)
    b = tuple(torch.randn(2, 1, size, 8, generator=gen).to(torch.bfloat16) for size in slices)
    base = torch.randn(len(mapping), sum(slices), generator=gen).to(torch.bfloat16)
    fast, slow = base.clone(), base.clone()
    wrapper.add_lora_linear(fast, x, a, b, 0.5, slices)
    PunicaWrapperCPU._r1t1_vllm_linear(wrapper, slow, x, a, b, 0.5, slices)
    assert not torch.equal(fast, base)  # the adapter did something
    assert_same_roundings(fast, slow)

    # a new adapter loaded into the slots in place (as vLLM's set_lora does): not the cached one
    for t in (*a, *b):
        t.copy_(torch.randn(t.shape, generator=gen).to(t.dtype))
    fast, slow = base.clone(), base.clone()
    wrapper.add_lora_linear(fast, x, a, b, 0.5, slices)
    PunicaWrapperCPU._r1t1_vllm_linear(wrapper, slow, x, a, b, 0.5, slices)
    assert_same_roundings(fast, slow)


def assert_same_roundings(fast, slow):
    """vLLM's values: the same products, rounded where vLLM's are, so the two differ at most by
    one rounding of the output's dtype, where a GEMM kernel sums a fused matmul's terms in
    another order (bit-identical on an Intel AVX-512/AMX machine; the kernel is the CPU's). A
    wrong slice, offset, scale or stale adapter is off by far more."""
    eps = torch.finfo(fast.dtype).eps
    assert ((fast.float() - slow.float()).abs() <= eps * slow.float().abs() + 1e-6).all()


# ----------------------------------------------------------------------------- sampling behaviour
def test_results_in_input_order_with_n_samples(engine, tokenizer, adapters):
    engine.set_adapter(adapters["a"], version=1)
    prompts = chat_prompts(tokenizer, 7)
    greedy = SamplingConfig(n=1, temperature=0.0, max_tokens=12)
    batch = engine.generate(prompts, greedy)
    assert [r.prompt_token_ids for r in batch] == [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    for i in (0, 3, 6):  # each result is the answer to its own prompt
        assert token_ids(engine.generate([prompts[i]], greedy)) == token_ids(batch[i:i + 1])
    # token ids in, same results out
    assert token_ids(engine.generate([r.prompt_token_ids for r in batch], greedy)) == token_ids(batch)

    sampled = engine.generate(prompts, SamplingConfig(n=5, temperature=1.0, max_tokens=12, seed=3))
    assert [len(r.completions) for r in sampled] == [5] * len(prompts)
    for r in sampled:
        assert len({tuple(c.token_ids) for c in r.completions}) > 1  # n distinct samples, not one copied
        for c in r.completions:
            assert len(c.logprobs) == len(c.token_ids) and all(lp <= 0 for lp in c.logprobs)


def test_same_seed_same_completions(engine, tokenizer, adapters):
    engine.set_adapter(adapters["a"], version=1)
    prompts = chat_prompts(tokenizer, 5)
    sampling = SamplingConfig(n=3, temperature=1.0, max_tokens=16, seed=123)
    first, again = engine.generate(prompts, sampling), engine.generate(prompts, sampling)
    other = engine.generate(prompts, dataclasses.replace(sampling, seed=124))
    assert token_ids(first) == token_ids(again)
    assert token_ids(first) != token_ids(other)


def test_stop_string_cuts_text_and_tokens(engine, tokenizer, adapters):
    engine.set_adapter(adapters["a"], version=1)
    prompt = chat_prompts(tokenizer, 3)[2:]
    greedy = SamplingConfig(n=1, temperature=0.0, max_tokens=40)
    full = engine.generate(prompt, greedy)[0].completions[0]
    # a stop string taken from the middle of the greedy text (two plain letters)
    starts = [k for k in range(len(full.text) // 3, len(full.text) - 2) if full.text[k:k + 2].isalpha()
              and full.text[k:k + 2].isascii()]
    assert starts, f"no plain text to stop on in {full.text!r}"
    stop = full.text[starts[0]:starts[0] + 2]
    cut = engine.generate(prompt, dataclasses.replace(greedy, stop=[stop]))[0].completions[0]
    assert cut.finish_reason == "stop"
    assert cut.text == full.text[:full.text.find(stop)]
    assert len(cut.token_ids) < len(full.token_ids)
    assert cut.token_ids == full.token_ids[:len(cut.token_ids)]
    assert stop in tokenizer.decode(cut.token_ids)  # the token that completed the stop string is kept


def test_max_tokens_truncation_is_flagged(engine, tokenizer, adapters):
    engine.set_adapter(adapters["a"], version=1)
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    results = engine.generate(chat_prompts(tokenizer, 4), SamplingConfig(n=4, temperature=1.0, max_tokens=6, seed=5))
    reasons = []
    for c in (c for r in results for c in r.completions):
        assert 1 <= len(c.token_ids) <= 6
        ended_on_eos = c.token_ids[-1] == eos
        assert c.finish_reason == ("stop" if ended_on_eos else "length")
        assert len(c.token_ids) == 6 or ended_on_eos
        reasons.append(c.finish_reason)
    assert "length" in reasons


# ----------------------------------------------------------------------------- adapters
def _bad_adapters(root, tiny_model, adapters, other_model) -> dict:
    good = adapters["a"]
    bad = {"missing": root / "missing"}
    bad["no_config"] = root / "no_config"
    shutil.copytree(good, bad["no_config"])
    (bad["no_config"] / "adapter_config.json").unlink()
    bad["no_weights"] = root / "no_weights"
    shutil.copytree(good, bad["no_weights"])
    (bad["no_weights"] / "adapter_model.safetensors").unlink()
    bad["bad_json"] = root / "bad_json"
    shutil.copytree(good, bad["bad_json"])
    (bad["bad_json"] / "adapter_config.json").write_text("{not json")
    bad["rank_too_big"] = save_random_lora(tiny_model, root / "rank16", r=16)
    bad["other_base"] = save_random_lora(other_model, root / "other_base", r=8)
    return bad


@pytest.fixture(scope="session")
def bad_adapters(tmp_path_factory, tiny_model, adapters):
    root = tmp_path_factory.mktemp("bad_adapters")
    other = build_random_qwen2(root / "other_model", hidden_size=256, num_layers=2, num_heads=4, num_kv_heads=4,
                               intermediate_size=384, vocab_size=512)
    return _bad_adapters(root, tiny_model, adapters, other)


def test_bad_adapter_rejected_before_any_swap(engine, tokenizer, adapters, bad_adapters):
    engine.set_adapter(adapters["a"], version=1)
    greedy = SamplingConfig(n=1, temperature=0.0, max_tokens=12)
    prompts = chat_prompts(tokenizer, 3)
    before = token_ids(engine.generate(prompts, greedy))
    for kind, path in bad_adapters.items():
        with pytest.raises(AdapterError) as err:
            engine.set_adapter(str(path), version=50)
        assert str(path.name) in str(err.value) or kind == "missing", err.value
        assert engine.adapter_version == 1, kind
    assert token_ids(engine.generate(prompts, greedy)) == before


def test_old_adapters_are_evicted(pool, vllm_engine, adapters, tokenizer):
    greedy = SamplingConfig(n=1, temperature=0.0, max_tokens=12)
    prompts = chat_prompts(tokenizer, 3)
    for version in range(10, 16):
        pool.set_adapter(adapters["ab"[version % 2]], version)
        vllm_engine.set_adapter(adapters["ab"[version % 2]], version)
    for info in pool.worker_info():
        assert info["adapter_version"] == 15
        assert info["loaded_adapters"] == [16]  # LoRA id = version + 1
        assert info["adapter_dirs"] == ["v15"]
    assert vllm_engine.loaded_adapters() == [16]
    # the same version pushed again with other weights is reloaded, not served from cache
    pool.set_adapter(adapters["a"], 15)
    vllm_engine.set_adapter(adapters["a"], 15)
    assert token_ids(pool.generate(prompts, greedy)) == token_ids(vllm_engine.generate(prompts, greedy))
    vllm_engine.set_adapter(adapters["b"], 16)
    assert token_ids(pool.generate(prompts, greedy)) != token_ids(vllm_engine.generate(prompts, greedy))


def test_backends_agree_on_greedy_output(pool, vllm_engine, hf_engine, adapters, tokenizer):
    prompts = chat_prompts(tokenizer, 6)
    greedy = SamplingConfig(n=1, temperature=0.0, max_tokens=32)
    for adapter in (adapters["a"], None):
        outs = {}
        for name, engine in (("ray-vllm", pool), ("vllm", vllm_engine), ("hf", hf_engine)):
            if adapter:
                engine.set_adapter(adapter, version=3)
            else:
                engine.clear_adapter()
            assert engine.adapter_version == (3 if adapter else None)
            outs[name] = engine.generate(prompts, greedy)
        ref = outs["ray-vllm"]
        for name in ("vllm", "hf"):
            assert token_ids(outs[name]) == token_ids(ref), name
            assert [r.completions[0].text for r in outs[name]] == [r.completions[0].text for r in ref], name
            assert [r.completions[0].finish_reason for r in outs[name]] == [r.completions[0].finish_reason for r in ref]
            got = torch.tensor([lp for r in outs[name] for lp in r.completions[0].logprobs])
            want = torch.tensor([lp for r in ref for lp in r.completions[0].logprobs])
            assert (got - want).abs().max().item() < LOGPROB_TOL, name


def test_text_decoded_once_equals_vllm_s_own_detokenizer(vllm_engine, adapters, tokenizer, monkeypatch):
    """Without stop strings vLLM does not detokenize (rl/rollout/vllm_engine.py: sampling_params)
    and each completion is decoded once at the end: the same texts, tokens and logprobs as with
    vLLM's incremental detokenizer and dict logprobs, on random tokens (incomplete UTF-8 among them)."""
    from rl.rollout import vllm_engine as module

    vllm_engine.set_adapter(adapters["a"], version=5)
    prompts = chat_prompts(tokenizer, 4)
    sampling = SamplingConfig(n=3, temperature=1.0, max_tokens=24, seed=11)
    params = module.sampling_params(sampling, 0)
    assert (params.detokenize, params.flat_logprobs) == (False, True)
    assert module.sampling_params(dataclasses.replace(sampling, stop=["</answer>"]), 0).detokenize
    fast = vllm_engine.generate(prompts, sampling)

    ours_params, ours_result = module.sampling_params, module.to_result

    def detokenizing_params(s, seed):
        p = ours_params(s, seed)
        p.detokenize, p.flat_logprobs = True, False
        return p

    monkeypatch.setattr(module, "sampling_params", detokenizing_params)
    monkeypatch.setattr(module, "to_result", lambda output, tokenizer=None: ours_result(output))  # vLLM's text
    slow = vllm_engine.generate(prompts, sampling)
    pairs = [(a, b) for ra, rb in zip(fast, slow) for a, b in zip(ra.completions, rb.completions)]
    assert len(pairs) == 12 and all(a.token_ids == b.token_ids for a, b in pairs)
    assert all(b.text for _, b in pairs)  # vLLM did detokenize this time
    assert [a.text for a, _ in pairs] == [b.text for _, b in pairs]
    assert all(a.logprobs == b.logprobs and a.finish_reason == b.finish_reason for a, b in pairs)


def test_other_process_attaches_to_the_pool(pool, tiny_model, adapters, tokenizer):
    """What accelerate ranks > 0 do: attach by name, see the creator's adapter, share the workers."""
    from rl.rollout.pool import RolloutPool

    pool.set_adapter(adapters["b"], version=4)
    attached = RolloutPool.attach(pool.name, str(tiny_model), pool.rollout, timeout_s=60)
    assert attached.adapter_version == 4
    sampling = SamplingConfig(n=2, temperature=1.0, max_tokens=10, seed=9)
    prompts = chat_prompts(tokenizer, 4)
    assert token_ids(attached.generate(prompts, sampling)) == token_ids(pool.generate(prompts, sampling))
    attached.shutdown()  # detaches only
    assert len(pool.generate(prompts[:1], sampling)) == 1


def test_bad_settings_fail_before_anything_starts(tiny_model):
    with pytest.raises(ValueError, match="lora.r=32 exceeds rollout.max_lora_rank=8"):
        make_rollout_engine(str(tiny_model), ROLLOUT, LoraSettings(r=32))
    with pytest.raises(ValueError, match="max_lora_rank=12"):
        make_rollout_engine(str(tiny_model), dataclasses.replace(ROLLOUT, max_lora_rank=12), LoraSettings(r=8))
    with pytest.raises(ValueError, match="backend"):
        make_rollout_engine(str(tiny_model), dataclasses.replace(ROLLOUT, backend="nope"), None)


# ----------------------------------------------------------------------------- faults
def _kill_during(pool, ray, worker: int, call, delay: float = 0.2):
    """Run ``call()`` and ray.kill one worker (Ray restarts it) while it runs. The batches
    below take about 1 s on an AVX-512 machine (16 prompts took 0.5 s, and a kill at 0.5 s
    once came after the batch had finished)."""
    pid = pool.worker_info()[worker]["pid"]
    timer = threading.Timer(delay, lambda: ray.kill(pool.workers[worker], no_restart=False))
    timer.start()
    try:
        return call(), pid
    finally:
        timer.join()


BIG = SamplingConfig(n=4, temperature=1.0, max_tokens=64, seed=21)


@pytest.mark.slow
def test_killed_worker_is_restarted_with_adapter_and_batch_completes(pool, ray_cluster, adapters, tokenizer):
    pool.set_adapter(adapters["a"], version=1)
    prompts = chat_prompts(tokenizer, 32)
    expected = pool.generate(prompts, BIG)
    start = time.monotonic()
    got, old_pid = _kill_during(pool, ray_cluster, 1, lambda: pool.generate(prompts, BIG))
    print(f"batch with a killed worker: {time.monotonic() - start:.1f} s")
    info = pool.worker_info()[1]
    assert info["pid"] != old_pid  # it really died and came back
    assert info["adapter_version"] == 1  # with the current policy
    assert token_ids(got) == token_ids(expected)
    assert [[c.logprobs for c in r.completions] for r in got] == [[c.logprobs for c in r.completions] for r in expected]


@pytest.mark.slow
def test_too_many_failures_raise_instead_of_hanging(pool, ray_cluster, adapters, tokenizer):
    pool.set_adapter(adapters["a"], version=1)
    prompts = chat_prompts(tokenizer, 32)
    strict = dataclasses.replace(pool.rollout, max_failures=0)
    pool.rollout, saved = strict, pool.rollout
    try:
        with pytest.raises(RuntimeError, match="max_failures=0"):
            _kill_during(pool, ray_cluster, 0, lambda: pool.generate(prompts, BIG))
    finally:
        pool.rollout = saved
    # the pool recovers on the next call, and the restarted worker has the current adapter
    results = pool.generate(prompts, BIG)
    assert len(results) == len(prompts)
    assert [i["adapter_version"] for i in pool.worker_info()] == [1, 1]


def test_only_the_ray_pool_can_be_shared_by_learner_processes(tiny_model, monkeypatch):
    from rl.rollout import connect_rollout_engine

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="cannot be shared"):
        connect_rollout_engine(str(tiny_model), dataclasses.replace(ROLLOUT, backend="vllm"), None, create=True)
