"""The learners: GRPO (grpo.py) and PPO (ppo.py) on TRL, and the SFT cold start (sft.py)."""


def trainer_for(cfg):
    """The ``train(cfg, run_dir, resume=False, ...)`` that ``grpo.algorithm`` names."""
    if cfg.grpo.algorithm == "ppo":
        from rl.learn.ppo import train
    else:
        from rl.learn.grpo import train
    return train
