"""The one Ray bootstrap (rl/core/ray_cluster.py): every rank of a launch joins one cluster
before its reward starts a COMET actor, so the ranks share that actor and find the rollout
pool. Two real processes, as `accelerate launch --num_processes 2` starts them, no RAY_ADDRESS."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

RANK_SCRIPT = r"""
import json, sys, time
from pathlib import Path
import ray
from rl.core.config import load_config
from rl.learn.grpo import load_reward
rank, comet, done = int(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
cfg = load_config("configs/toy.yaml", ["--reward.spec", '["chrf", {"name": "comet", "weight": 1.0}]',
                                       "--reward.comet_model", comet, "--rollout.backend", "ray-vllm"])
reward = load_reward(cfg, is_main=rank == 0)
actor = ray.get_actor(f"comet-scorer:{comet}", namespace="r1t1")
print("RESULT " + json.dumps({"gcs": ray.get_runtime_context().gcs_address, "actor": actor._actor_id.hex()}), flush=True)
if rank == 0:  # keep the cluster up until rank 1 has looked
    deadline = time.monotonic() + 120
    while not done.exists() and time.monotonic() < deadline:
        time.sleep(0.5)
else:
    done.write_text("ok")
"""


def test_two_ranks_join_one_cluster_and_share_one_comet_actor(tiny_comet, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(29600 + os.getpid() % 300),
               OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    done = tmp_path / "rank1.done"
    procs = [subprocess.Popen([sys.executable, str(script), str(rank), str(tiny_comet), str(done)], cwd=REPO,
                              env={**env, "RANK": str(rank)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for rank in (0, 1)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, out[-2000:] + err[-4000:]
    results = [json.loads(next(line[7:] for line in out.splitlines() if line.startswith("RESULT "))) for out, _ in outs]
    assert results[0]["gcs"] == results[1]["gcs"]  # one cluster (before: rank 1 started its own)
    assert results[0]["actor"] == results[1]["actor"]  # one COMET actor for both ranks
