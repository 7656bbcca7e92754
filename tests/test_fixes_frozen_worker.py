"""Issue 13, item 9: a frozen rollout worker (SIGSTOP) no longer hangs training.
Past ``rollout.generation_timeout_s`` the pool kills it with a warning naming the
worker and the key, Ray restarts it, its share runs again (the dead-worker path),
and ``rollout/worker_restarts`` reaches metrics.jsonl.

One Ray pool of 2 workers on a tiny random Qwen2 (as in tests/test_rollout.py)."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import threading
import time
from types import SimpleNamespace

import pytest

from helpers_models import build_tiny_qwen2, save_random_lora
from rl.core.analytics import CotLabeler
from rl.core.config import LoraSettings, RolloutConfig, SamplingConfig
from rl.learn.grpo import StepStats, _LoggingCallback
from rl.rollout import make_rollout_engine
from rl.rollout.pool import RolloutPool

ROLLOUT = RolloutConfig(backend="ray-vllm", num_workers=2, dtype="float32", max_lora_rank=8, enforce_eager=True,
                        max_model_len=512, cpu_kv_cache_gb=1, max_failures=3)
BIG = SamplingConfig(n=4, temperature=1.0, max_tokens=64, seed=21)
WORDS = "bada kemo sifu lorin tamek vopu zenda rigo muna pelo".split()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return build_tiny_qwen2(tmp_path_factory.mktemp("tiny_qwen2"))


@pytest.fixture(scope="module")
def pool(ray_cluster, tiny_model):
    """Module-scoped (not session): its 2 CPUs are free again for the other test files' pools."""
    engine = make_rollout_engine(str(tiny_model), ROLLOUT, LoraSettings(r=8))
    yield engine
    engine.shutdown()


def chat_prompts(pool: RolloutPool, count: int) -> list[str]:
    return [pool.tokenizer.apply_chat_template(
        [{"role": "user", "content": " ".join(WORDS[(i + j) % len(WORDS)] for j in range(2 + i % 5))}],
        tokenize=False, add_generation_prompt=True) for i in range(count)]


def _freeze_during(pool: RolloutPool, worker: int, call, delay: float = 0.2):
    """Run ``call()`` and SIGSTOP one worker's process ``delay`` s into it (the batches
    take seconds here, so the worker is frozen mid-batch). SIGCONT afterwards in any
    case, so no frozen process outlives the test. Returns (result or exception, pid)."""
    pid = pool.worker_info()[worker]["pid"]
    timer = threading.Timer(delay, os.kill, (pid, signal.SIGSTOP))
    timer.start()
    try:
        try:
            return call(), pid
        except Exception as exc:  # noqa: BLE001 - returned for the caller to check
            return exc, pid
    finally:
        timer.join()
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass


def _gone(pid: int, within_s: float = 10.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def _with_timeout(pool: RolloutPool, **changes):
    """Swap the pool's settings for a test; returns the ones to put back."""
    saved, pool.rollout = pool.rollout, dataclasses.replace(pool.rollout, **changes)
    return saved


def test_frozen_worker_is_killed_restarted_and_its_share_rerun(pool, tiny_model, tmp_path, caplog):
    pool.set_adapter(str(save_random_lora(tiny_model, tmp_path / "a", r=8, seed=1)), version=1)
    prompts = chat_prompts(pool, 16)
    start = time.monotonic()
    expected = pool.generate(prompts, BIG)
    healthy_s = time.monotonic() - start
    timeout_s = max(5.0, 3 * healthy_s)  # a healthy batch never trips it, a frozen one does
    pid_0 = pool.worker_info()[0]["pid"]
    restarts = pool.worker_restarts
    saved = _with_timeout(pool, generation_timeout_s=timeout_s)
    try:
        with caplog.at_level(logging.WARNING, logger="rl.rollout.pool"):
            start = time.monotonic()
            got, frozen_pid = _freeze_during(pool, 1, lambda: pool.generate(prompts, BIG))
            took = time.monotonic() - start
    finally:
        pool.rollout = saved
    print(f"healthy batch {healthy_s:.1f} s; with a frozen worker (timeout {timeout_s:.1f} s) {took:.1f} s")
    assert not isinstance(got, Exception), got
    assert [[c.token_ids for c in r.completions] for r in got] == [[c.token_ids for c in r.completions] for r in expected]
    assert pool.worker_restarts == restarts + 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("rollout worker 1 " in m and f"rollout.generation_timeout_s={timeout_s:g} s" in m for m in warnings), \
        warnings
    assert _gone(frozen_pid)  # killed, not left stopped
    info = pool.worker_info()
    assert info[1]["pid"] != frozen_pid and info[1]["adapter_version"] == 1  # restarted with the current policy
    assert info[0]["pid"] == pid_0  # the healthy worker was left alone


def test_frozen_worker_beyond_max_failures_raises_naming_the_timeout(pool):
    prompts = chat_prompts(pool, 16)
    saved = _with_timeout(pool, generation_timeout_s=5.0, max_failures=0)
    try:
        got, frozen_pid = _freeze_during(pool, 0, lambda: pool.generate(prompts, BIG))
    finally:
        pool.rollout = saved
    assert isinstance(got, RuntimeError), got
    assert "rollout.generation_timeout_s=5 s" in str(got) and "max_failures=0" in str(got)
    assert _gone(frozen_pid)
    assert len(pool.generate(prompts, BIG)) == len(prompts)  # Ray restarted it: the pool works on


def test_generation_timeout_must_be_positive(tiny_model):
    with pytest.raises(ValueError, match="rollout.generation_timeout_s must be > 0"):
        make_rollout_engine(str(tiny_model), dataclasses.replace(ROLLOUT, generation_timeout_s=0), LoraSettings(r=8))


def test_worker_restarts_reach_metrics_jsonl_per_step(tmp_path):
    engine = SimpleNamespace(worker_restarts=2)  # restarts before this run (a shared engine) are not counted
    stats = StepStats()
    stats.watch_restarts(engine)
    callback = _LoggingCallback(None, tmp_path, stats, CotLabeler({}), is_main=True, checkpoint=None)
    for step, total in [(1, 2), (2, 5), (3, 5)]:
        engine.worker_restarts = total
        callback.on_log(None, SimpleNamespace(global_step=step), None, logs={"loss": 0.1})
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["rollout/worker_restarts"] for r in records] == [0, 3, 0]


def test_engines_without_workers_report_no_restarts():
    stats = StepStats()
    stats.watch_restarts(object())  # the vllm / hf backends
    assert stats.drain(CotLabeler({}))["rollout/worker_restarts"] == 0
