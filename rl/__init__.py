"""r1t1-rl: RL fine-tuning (cold-start SFT + GRPO) of LLMs for reasoning translation."""
import warnings

# TRL 1.16 warns on import that vLLM 0.32 is newer than the range it tested. We use
# TRL's GRPO math with our own rollout engine, never TRL's vLLM client or server.
warnings.filterwarnings("ignore", message="TRL currently supports vLLM versions")
