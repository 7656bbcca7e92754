"""Shared fixtures. Expensive things (Ray cluster, vLLM engines, the toy world) are
session-scoped so the suite starts each once."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
# Toy worlds that a slow test builds on first use (rl/tools/toy.py: minutes on one torch thread),
# by the test file that needs them. They start building in a background process as soon as the
# tests are collected, so that each builds on the core the suite's first tests leave free (the
# first of those build the default toy world, on one thread too). The build holds a file lock,
# so a test that gets there first waits for it, and a failed background build is built again
# (and its error shown) by the test itself.
BACKGROUND_WORLDS = {"tests/test_pivot.py": "configs/toy_pivot.yaml"}
_BUILD_WORLDS = """
import sys
from rl.core import resolve
from rl.core.config import load_config
for path in sys.argv[1:]:
    resolve.model_path(load_config(path))
"""


def pytest_collection_finish(session):
    configs = sorted({config for test_file, config in BACKGROUND_WORLDS.items()
                      if any(item.nodeid.startswith(test_file) for item in session.items)})
    if not configs:
        return
    with tempfile.NamedTemporaryFile("w", prefix="r1t1-world-build-", suffix=".log", delete=False) as log:
        session.config._background_worlds = (log.name, subprocess.Popen(  # the child keeps its own copy of log
            [sys.executable, "-c", _BUILD_WORLDS, *configs], cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "OMP_NUM_THREADS": "1"}))


def pytest_sessionfinish(session):
    log, build = getattr(session.config, "_background_worlds", (None, None))
    if build is None:
        return
    if build.poll() is None:  # the session ended first (-x, Ctrl-C); the build's temp dir never becomes a world
        build.terminate()
        build.wait()
    elif build.returncode:
        print(f"\n[conftest] the background world build failed (rc {build.returncode}); its log: {log}")
        return
    Path(log).unlink(missing_ok=True)


def pytest_addoption(parser):
    parser.addoption(
        "--data-dir",
        default=str(REPO_ROOT.parent / "shared" / "data"),
        help="directory with flores200/ and ntrex128/ (real parallel data for tests)",
    )


@pytest.fixture(scope="session")
def data_dir(request) -> Path:
    path = Path(request.config.getoption("--data-dir"))
    if not (path / "flores200").is_dir():
        pytest.fail(f"--data-dir {path} has no flores200/; pass --data-dir pointing at the shared data")
    return path


@pytest.fixture(scope="session")
def toy_world():
    """The default toy world (rl/tools/toy.py), cached in <repo>/.toy_cache: built once (~110 s on
    one core), then reused by every later session until its config or generator changes."""
    from rl.core.config import ToyConfig
    from rl.tools.toy import build_toy_world

    return build_toy_world(ToyConfig(), root=REPO_ROOT, progress=False)


@pytest.fixture(scope="session")
def toy_sft_adapter(toy_world, tmp_path_factory) -> Path:
    """The cold-start LoRA adapter of configs/toy.yaml's SFT stage (rl/sft.py), trained once per session."""
    from rl.core.config import load_config
    from rl.learn.sft import run_sft

    out = tmp_path_factory.mktemp("sft")
    cfg = load_config(REPO_ROOT / "configs" / "toy.yaml", ["--output_dir", str(out)])
    return run_sft(cfg)


@pytest.fixture(scope="session")
def toy_vllm_engine(toy_world):
    """One in-process vLLM engine (backend "vllm", fp32, eager: starts in ~10 s) on the toy
    model, shared by the evaluation tests, which swap adapters on it (LoRA rank <= 16)."""
    from rl.core.config import RolloutConfig
    from rl.rollout import make_rollout_engine

    engine = make_rollout_engine(str(toy_world.model_dir), RolloutConfig(
        backend="vllm", dtype="float32", max_model_len=1024, max_lora_rank=16, enforce_eager=True))
    yield engine
    engine.shutdown()


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster for the whole session (started once: ~10-40 s on 2 cores).

    8 logical CPUs (scheduling tokens, not cores: the toy recipes' pools take 2 each, and a module's
    pool may still be up while a test starts another, as the two-learner launches do), 512 MiB
    object store, no dashboard, namespace "r1t1" (where the product's named actors live). Yields
    the ``ray`` module. If Ray is already initialised, that cluster is
    reused and left running.
    """
    import ray

    if ray.is_initialized():
        yield ray
        return
    ray.init(num_cpus=8, include_dashboard=False, namespace="r1t1", object_store_memory=512 * 1024**2)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_comet(tmp_path_factory) -> Path:
    """A tiny random reference-based COMET checkpoint dir, built offline (rewards.comet.build_tiny_comet)."""
    from rewards.comet import build_tiny_comet

    return build_tiny_comet(tmp_path_factory.mktemp("tiny_comet"), kind="regression")


@pytest.fixture(scope="session")
def tiny_comet_qe(tmp_path_factory) -> Path:
    """A tiny CometKiwi-like (UnifiedMetric, mt+src) QE checkpoint dir, built offline."""
    from rewards.comet import build_tiny_comet

    return build_tiny_comet(tmp_path_factory.mktemp("tiny_comet_qe"), kind="unified")
