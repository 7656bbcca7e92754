"""Training: run-dir safety, early config errors, and real GRPO steps on the toy
world (Ray + vLLM rollouts, TRL GRPOTrainer, LoRA sync) with KL and resume."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from transformers import TrainerCallback
from rl.core.config import load_config
from rl.core.runs import RunDirError, prepare_run_dir, read_metrics
from rl.train import main as train_main

REPO = Path(__file__).resolve().parent.parent
TOY = str(REPO / "configs" / "toy.yaml")
RESUME_RTOL, RESUME_ATOL = 1e-5, 1e-6  # resumed vs straight run: fp32 learner, fp32 seeded engine
# Held-out chrF gain of GRPO over its CoT-SFT start (mean of both toy directions, R1-T1
# decoding), averaged over LEARNING_SEEDS, that the toy run must beat. The toy world is built on
# the machine that runs the tests, and each CPU kind's numerics build another base, and so another
# cold start: that moves the gain more than a seed does. configs/toy.yaml, GRPO seeds 0-4 from
# one cold start, one world per machine:
# - a 2-core AMD EPYC with AVX-512 (2026-11-30, the six-step templates' world; CoT-SFT chrF 48.5):
#   gains +19.2, +13.7, +19.4, +20.9, +20.0; mean 18.7, sd 2.8;
# - a 2-core Intel Xeon with AVX-512 and AMX (2026-12-02; CoT-SFT chrF 38.9): +8.7, +7.0, +4.1,
#   +3.3, +6.7; mean 6.0, sd 2.2 (a two-seed mean's: 1.6). The previous margin, 8.0, failed there
#   (seeds 0 and 1: 7.84; 7.67 with TRL's own scoring passes, the previous learner).
# The margin is 2.5 two-seed-mean sds below the weaker world's mean; and every seed must gain (the
# smallest gain seen was 1.5 sds above 0). Two AVX2 machines passed the previous margin.
LEARNING_SEEDS = (0, 1)
LEARNING_MARGIN = 2.0


def grpo_base_adapter_dir(base: list[str]) -> Path:
    return Path(base[base.index("--model.init_adapter") + 1])


def toy_cfg(tmp: Path, *overrides: str):
    return load_config(TOY, ["--output_dir", str(tmp), *overrides])


def test_refuses_to_overwrite_a_run(tmp_path):
    run = prepare_run_dir(tmp_path, "r1")
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    with pytest.raises(RunDirError, match="already exists"):
        prepare_run_dir(tmp_path, "r1")
    # the CLI says so and exits 2 before any model is loaded
    assert train_main(["--config", TOY, "--output_dir", str(tmp_path), "--run-name", "r1"]) == 2
    moved = prepare_run_dir(tmp_path, "r1", overwrite=True)
    assert moved == run and not any(run.iterdir())
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("r1.old-")]
    assert len(kept) == 1 and (kept[0] / "metrics.jsonl").read_text() == '{"step": 1}\n'


@pytest.mark.parametrize(
    "override, message",
    [
        (["--grpo.bta", "0.1"], "unknown key"),
        (["--grpo.beta", "high"], "grpo.beta must be a number"),
        (["--model.init_adapter", "/no/such/adapter"], "model.init_adapter"),
        (["--reward.spec", "no_such_reward"], "no_such_reward"),
        (["--grpo.overlap_generation", "true", "--grpo.importance_sampling_correction", "false"],
         "needs grpo.importance_sampling_correction"),
    ],
)
def test_bad_config_fails_before_any_model_loads(tmp_path, capsys, monkeypatch, override, message):
    import transformers

    def refuse(*a, **k):
        raise AssertionError("a model was loaded before the config was rejected")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)
    code = train_main(["--config", TOY, "--output_dir", str(tmp_path), "--run-name", "bad", *override])
    assert code == 2
    assert message in capsys.readouterr().err


# ----------------------------------------------------------------------------- learner pieces, no engine

class _Batches:
    """The Trainer's ``get_batch_samples``, which rl.rollout.feed.Lookahead reads through."""

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        samples = []
        for _ in range(num_batches):
            try:
                samples.append(next(epoch_iterator))
            except StopIteration:
                break
        return samples, None


def test_lookahead_hands_the_trainer_the_same_batches_and_shows_the_next_prompts():
    from rl.rollout.feed import Lookahead, RolloutFeed

    def epoch(tag, steps=3, accumulation=2):
        return [[{"prompt": f"{tag}{step}.{micro}"} for _ in range(2)] for step in range(steps) for micro in range(accumulation)]

    plain, looking = _Batches(), _Batches()
    feed = RolloutFeed(engine=None, tokenizer=None, sampling=None, seed=0, stats=None)
    lookahead = Lookahead(feed)
    for tag in ("a", "b"):  # two epochs: a fresh iterator each
        want_it, got_it = iter(epoch(tag)), iter(epoch(tag))
        for step in range(4):  # the 4th call finds the epoch exhausted
            want, got = plain.get_batch_samples(want_it, 2, None), lookahead.read(looking.get_batch_samples, got_it, 2, None)
            assert got == want
            # TRL generates a step from its first batch: the feed sees the next step's
            upcoming = [f"{tag}{step + 1}.0"] * 2 if step + 1 < 3 else None
            assert feed.next_prompts() == upcoming


def test_cpu_learner_scores_only_completion_tokens_with_the_same_logprobs(toy_world, monkeypatch):
    """rl/learn/trl_bridge.py: on CPU, TRL's fused LM head scores only labelled positions
    (as it does on CUDA), and every log-prob is what the full scoring gives."""
    import torch
    import trl.trainer.utils as trl_utils
    from transformers import AutoModelForCausalLM

    from rl.learn.trl_bridge import score_only_completion_tokens_on_cpu

    model = AutoModelForCausalLM.from_pretrained(toy_world.model_dir, dtype=torch.float32)
    trl_utils.add_fused_lm_head(model)
    torch.manual_seed(0)
    input_ids = torch.randint(3, model.config.vocab_size, (4, 40))
    attention = torch.ones_like(input_ids)
    attention[0, :7] = 0  # a left-padded prompt
    labels = input_ids.masked_fill(attention == 0, -100)
    labels[:, :30] = -100  # the last 10 positions are the completion
    scored = []
    kernel = trl_utils._ChunkedLogProbFunction
    apply = kernel.apply

    def counting_apply(hidden, *args):
        scored.append(hidden.shape[0])
        return apply(hidden, *args)

    monkeypatch.setattr(kernel, "apply", counting_apply)
    monkeypatch.setattr(trl_utils, "_use_triton", trl_utils._use_triton)  # undone after the test
    assert not score_only_completion_tokens_on_cpu(enable=False)  # TRL as shipped (earlier tests may have patched)
    with torch.no_grad():
        full = model(input_ids=input_ids, attention_mask=attention, labels=labels, fused_lm_head=True).log_probs
        assert score_only_completion_tokens_on_cpu()
        assert trl_utils._use_triton(torch.device("cpu"))
        compact = model(input_ids=input_ids, attention_mask=attention, labels=labels, fused_lm_head=True).log_probs
    assert scored == [4 * 39, 4 * 10]  # every shifted position before, the labelled ones after
    assert torch.allclose(full[:, -10:], compact[:, -10:], atol=1e-6)
    assert (compact[:, :-10] == 0).all()


# ----------------------------------------------------------------------------- real GRPO runs

@pytest.fixture(scope="module")
def grpo_base(tmp_path_factory, toy_world, toy_sft_adapter, ray_cluster):
    """Settings shared by the GRPO runs below: small batches, fp32 engine, seeded."""
    out = tmp_path_factory.mktemp("grpo")
    return out, [
        "--model.init_adapter", str(toy_sft_adapter),
        "--grpo.prompts_per_step", "4", "--sampling.n", "4", "--sampling.max_tokens", "64",
        "--rollout.dtype", "float32", "--grpo.save_steps", "2",
    ]


def run_grpo(out: Path, name: str, base: list[str], *extra: str, resume: bool = False, engine=None, callbacks=(),
             config: str = TOY):
    """One training run of ``config`` (the learner its grpo.algorithm names) in ``out/name``."""
    from rl.learn import trainer_for

    cfg = load_config(config, ["--output_dir", str(out), *base, *extra])
    cfg.run_name = name
    run_dir = prepare_run_dir(out, name, resume=resume)
    trainer_for(cfg)(cfg, run_dir, resume=resume, engine=engine, callbacks=callbacks)
    return run_dir


@pytest.fixture(scope="module")
def shared_engine(grpo_base, toy_world):
    from rl.rollout import make_rollout_engine

    cfg = load_config(TOY, ["--rollout.dtype", "float32"])
    engine = make_rollout_engine(str(toy_world.model_dir), cfg.rollout, cfg.lora, seed=0)
    yield engine
    engine.shutdown()


@pytest.mark.slow
def test_grpo_steps_log_bounded_kl_and_push_one_adapter_per_step(grpo_base, shared_engine):
    out, base = grpo_base
    run = run_grpo(out, "kl", base, "--grpo.max_steps", "2", "--grpo.beta", "0.04", engine=shared_engine)
    records = read_metrics(run)
    assert [r["step"] for r in records] == [1, 2]
    assert all(0 <= r["kl"] < 1.0 for r in records)
    assert records[-1]["kl"] > 0  # after one update the policy has moved away from the reference
    for r in records:  # every part of the step is measured and logged
        assert {"reward", "format_ok", "time/generation", "time/reward", "time/sync", "time/learner"} <= set(r)
        assert r["adapter_pushes"] == 1  # one adapter push per optimizer step
    assert (run / "adapter" / "adapter_model.safetensors").exists()
    assert (run / "checkpoints" / "checkpoint-2").is_dir()
    assert (run / "plots" / "reward.png").exists()


@pytest.mark.slow
def test_beta_zero_runs_no_reference_pass(grpo_base, shared_engine):
    out, base = grpo_base
    run = run_grpo(out, "beta0", base, "--grpo.max_steps", "1", "--grpo.beta", "0", engine=shared_engine)
    (record,) = read_metrics(run)
    assert "kl" not in record  # TRL computes (and logs) KL only when it runs the reference pass
    cfg = json.loads(json.dumps(load_config(str(run / "config.yaml")).to_dict()))
    assert cfg["grpo"]["beta"] == 0.0


@pytest.mark.slow
def test_prompt_scored_once_in_every_pass_gives_trl_s_update(grpo_base, shared_engine, monkeypatch):
    """One step with each group's prompt run once in the reference pass and in the loss's pass
    (groups kept whole in the micro-batches, rl/learn/shared_prefix.py) against TRL's own
    passes and row shuffle: the same samples, the same KL, the same adapter to float rounding
    (Adam's first step is ~lr * sign(gradient), so rounding can flip only the near-zero ones)."""
    import torch

    from rl.learn import shared_prefix
    from rl.learn.trl_bridge import RolloutGRPOTrainer

    out, base = grpo_base
    extra = ("--grpo.max_steps", "1", "--grpo.beta", "0.04", "--grpo.gradient_accumulation_steps", "2")
    monkeypatch.setattr(RolloutGRPOTrainer, "share_prompt_prefix", False)
    theirs = run_grpo(out, "prompt-per-row", base, *extra, engine=shared_engine)
    monkeypatch.setattr(RolloutGRPOTrainer, "share_prompt_prefix", True)
    passes = []
    score_chunk = shared_prefix._score_chunk
    monkeypatch.setattr(shared_prefix, "_score_chunk",
                        lambda *a, **kw: passes.append(torch.is_grad_enabled()) or score_chunk(*a, **kw))
    ours = run_grpo(out, "prompt-once", base, *extra, engine=shared_engine)
    assert True in passes and False in passes  # the loss's pass and the reference pass both shared
    (mine,), (want,) = read_metrics(ours), read_metrics(theirs)
    assert mine["reward"] == want["reward"] and mine["completion_length"] == want["completion_length"]
    assert mine["kl"] == pytest.approx(want["kl"], rel=1e-3, abs=1e-6)
    start = _adapter_weights(Path(base[base.index("--model.init_adapter") + 1]))
    got, expected = _adapter_weights(ours / "adapter"), _adapter_weights(theirs / "adapter")
    moved = sum(float((expected[k] - start[k]).norm() ** 2) for k in expected) ** 0.5
    apart = sum(float((got[k] - expected[k]).norm() ** 2) for k in expected) ** 0.5
    assert moved > 0 and apart < 0.01 * moved, (apart, moved)  # measured: 1.7e-5 of it


class PressCtrlC(TrainerCallback):
    """Sends this process a real SIGINT at the end of ``step``: the trainer's Ctrl-C
    handler then checkpoints after the following step and stops."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kw):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


def _adapter_weights(adapter_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(adapter_dir / "adapter_model.safetensors"))


@pytest.mark.slow
def test_interrupted_and_resumed_run_equals_uninterrupted_run(grpo_base, shared_engine):
    """Ctrl-C after step 2 of 4, then --resume: same metrics and adapter as a straight
    run (tolerance RESUME_RTOL; fp32 everywhere, seeded per-step sampling)."""
    out, base = grpo_base
    steps = ["--grpo.max_steps", "4", "--grpo.save_steps", "100", "--grpo.beta", "0.04"]
    straight = run_grpo(out, "straight", base, *steps, engine=shared_engine)
    cut = run_grpo(out, "cut", base, *steps, engine=shared_engine, callbacks=[PressCtrlC(1)])
    assert [r["step"] for r in read_metrics(cut)] == [1, 2]  # stopped after the step in progress
    assert (cut / "checkpoints" / "checkpoint-2").is_dir()  # the Ctrl-C checkpoint (save_steps is 100)
    resumed = run_grpo(out, "cut", base, *steps, engine=shared_engine, resume=True)

    assert_same_run(straight, resumed, grpo_base_adapter_dir(base), {"reward", "loss", "kl", "format_ok"})


def assert_same_run(straight: Path, resumed: Path, start_adapter: Path, keys: set[str]) -> None:
    """Every logged float (``keys`` among them) and the final adapter within RESUME_RTOL / RESUME_ATOL."""
    want, got = read_metrics(straight), read_metrics(resumed)
    assert [r["step"] for r in got] == [r["step"] for r in want]
    compared = [k for k in want[0] if not k.startswith("time/") and isinstance(want[0][k], float)]
    assert keys <= set(compared)
    for a, b in zip(want, got):
        for key in compared:
            assert b[key] == pytest.approx(a[key], rel=RESUME_RTOL, abs=RESUME_ATOL), (a["step"], key)
    want_w, got_w = _adapter_weights(straight / "adapter"), _adapter_weights(resumed / "adapter")
    assert want_w.keys() == got_w.keys()
    start = _adapter_weights(start_adapter)
    moved = max(float((want_w[k] - start[k]).abs().max()) for k in want_w)
    diff = max(float((want_w[k] - got_w[k]).abs().max()) for k in want_w)
    assert moved > 100 * max(diff, 1e-9)  # training moved the adapter far more than resume perturbs it
    assert diff <= RESUME_ATOL


@pytest.mark.slow
def test_overlapped_generation_samples_one_version_behind_and_resumes_exactly(grpo_base, shared_engine):
    """grpo.overlap_generation: step 1 samples on-policy (nothing was prefetched), later steps
    sample from the adapter one step behind, every prefetch is used; and Ctrl-C + --resume
    gives the straight run's metrics and adapter (the checkpoint keeps the sampling adapter)."""
    out, base = grpo_base
    steps = ["--grpo.max_steps", "4", "--grpo.save_steps", "100", "--grpo.overlap_generation", "true",
             "--grpo.importance_sampling_correction", "true"]
    straight = run_grpo(out, "overlap-straight", base, *steps, engine=shared_engine)
    want = read_metrics(straight)
    assert [r["rollout/prefetch_misses"] for r in want] == [0, 0, 0, 0]
    assert want[0]["sampler_logp_diff"] < 1e-4  # fp32 engine, same adapter: on-policy
    for r in want[1:]:  # one version behind: the learner has moved since these were sampled
        assert r["sampler_logp_diff"] > 100 * max(want[0]["sampler_logp_diff"], 1e-7), r
        assert r["is_ratio_min"] < 1 < r["is_ratio_max"]

    cut = run_grpo(out, "overlap-cut", base, *steps, engine=shared_engine, callbacks=[PressCtrlC(1)])
    assert (cut / "checkpoints" / "checkpoint-2" / "rollout_adapter" / "adapter_config.json").is_file()
    resumed = run_grpo(out, "overlap-cut", base, *steps, engine=shared_engine, resume=True)
    assert_same_run(straight, resumed, grpo_base_adapter_dir(base), {"reward", "loss", "kl", "sampler_logp_diff"})


def launch_two_learners(ray_cluster, port: int, *train_args: str) -> None:
    """`accelerate launch --multi_gpu --num_processes 2 rl/train.py TRAIN_ARGS` on the session's
    Ray cluster (eager engines, one torch thread per rank); fails with its output's tail."""
    import subprocess
    import sys

    env = {**os.environ, "RAY_ADDRESS": ray_cluster.get_runtime_context().gcs_address, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port),
           str(REPO / "rl" / "train.py"), *train_args, "--rollout.enforce_eager", "true"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]


@pytest.mark.slow
def test_two_learner_processes_share_one_pool(grpo_base, shared_engine, ray_cluster):
    """`accelerate launch --multi_gpu --num_processes 2 rl/train.py` on CPUs (two gloo processes;
    `--cpu --num_processes 2` would start one, without mpirun): rank 0 starts the pool on the
    session's Ray cluster, rank 1 attaches to it; one adapter push per step; and since the
    sampling seeds follow the global batch, step 1 equals a one-process run's step 1.
    Generation overlaps the update here (the path with per-rank prefetches and barriers)."""
    out, base = grpo_base
    steps = ["--grpo.max_steps", "2", "--grpo.beta", "0.04", "--grpo.importance_sampling_correction", "true"]
    launch_two_learners(ray_cluster, 29517, "--config", TOY, "--output_dir", str(out), "--run-name", "two-procs",
                        *base, *steps, "--grpo.overlap_generation", "true")
    two = read_metrics(out / "two-procs")
    assert [r["step"] for r in two] == [1, 2]
    assert all(r["learner_processes"] == 2 for r in two)  # two ranks really trained
    assert all(r["adapter_pushes"] == 1 for r in two)  # rank 1 never pushes; rank 0 once per step
    assert all(r["rollout/prefetch_misses"] == 0 for r in two)  # step 2 used what was sampled during step 1

    one = read_metrics(run_grpo(out, "one-proc", base, *steps, engine=shared_engine))
    assert two[0]["reward"] == pytest.approx(one[0]["reward"], abs=1e-6)  # the same 16 completions
    assert two[0]["loss"] == pytest.approx(one[0]["loss"], rel=1e-3, abs=1e-6)  # and the same loss scale


@pytest.mark.slow
def test_toy_grpo_learns_beyond_seed_noise(toy_world, toy_sft_adapter, shared_engine, tmp_path):
    """configs/toy.yaml as shipped, GRPO seeds LEARNING_SEEDS from the one SFT cold start: held-out
    chrF (both toy directions, R1-T1 decoding) rises by more than LEARNING_MARGIN on the mean
    over seeds (see its comment for the seed spread it is set against), every seed gains,
    the format holds, and in training later steps earn more than the first ones."""
    from rl.eval.evaluate import evaluate

    cfg = load_config(TOY, ["--output_dir", str(tmp_path)])

    def held_out(adapter, name: str) -> dict:
        results = evaluate(cfg, adapter=adapter, out=tmp_path / name, engine=shared_engine, progress=False)
        return results["averages"]["all"]

    sft = held_out(toy_sft_adapter, "eval-sft")
    gains = []
    for seed in LEARNING_SEEDS:
        run = run_grpo(tmp_path, f"learn-{seed}", ["--model.init_adapter", str(toy_sft_adapter), "--seed", str(seed)],
                       engine=shared_engine)
        records = read_metrics(run)
        assert len(records) == cfg.grpo.max_steps
        k = 5  # training itself (temperature 1.0): later steps earn more than the first ones
        assert sum(r["reward"] for r in records[-k:]) > sum(r["reward"] for r in records[:k]), seed
        grpo = held_out(run, f"eval-grpo-{seed}")
        assert grpo["chrf"] > sft["chrf"], (seed, sft, grpo)  # every seed gains
        assert 1 - grpo["format_failure_rate"] > 0.9, (seed, grpo)
        gains.append(grpo["chrf"] - sft["chrf"])
    assert sum(gains) / len(gains) > LEARNING_MARGIN, (gains, sft)
