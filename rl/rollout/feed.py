"""TRL's ``rollout_func``: the learner's side of the rollout engine.

Each call gets one step's prompts (each repeated once per sample) and returns
token ids and the workers' logprobs. A run of identical prompts goes to the
engine as one request with ``n`` samples. Seeds follow the prompt's place in the
global batch, so a step samples the same completions whatever the number of
learner processes.

With ``grpo.overlap_generation`` the feed also starts the *next* step's
generation, in a thread, as soon as it hands this step's completions to TRL:
the engine samples while the learner scores, computes the loss and updates.
Those samples come from the adapter one step behind. TRL's importance-sampling
correction (the workers' logprobs against the learner's) weights them for it,
which is why overlap requires the correction. The next step's prompts are read
one step ahead from the trainer's batches (:class:`Lookahead`); if they differ
from what TRL then asks for, the prefetched samples are dropped and that step
generates in place (counted in ``rollout/prefetch_misses``).
"""
from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

from rl.core.config import SamplingConfig


class RolloutFeed:
    """Callable as TRL's ``rollout_func(prompts, trainer)``. State (the one
    generation in flight) makes this a class."""

    def __init__(self, engine, tokenizer, sampling: SamplingConfig, seed: int, stats, overlap: bool = False):
        self.engine, self.tokenizer, self.sampling, self.seed, self.stats = engine, tokenizer, sampling, seed, stats
        self.overlap = overlap
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="rollout-prefetch") if overlap else None
        self._pending: tuple[tuple, Future] | None = None
        self.next_prompts: Callable[[], list[str] | None] = lambda: None  # set by Lookahead
        self.before_prefetch: Callable[[], None] = lambda: None  # resume hook (rl/learn/grpo.py)

    def __call__(self, prompts: list[str], trainer) -> dict[str, list]:
        start = time.perf_counter()
        step, rank = trainer.state.global_step, trainer.accelerator.process_index
        results = None
        if self._pending is not None:
            key, future = self._pending
            self._pending = None
            prefetched = future.result()  # an engine error surfaces here
            if key == (step, tuple(prompts)):
                results = prefetched
            else:
                self.stats.prefetch_misses += 1
        if results is None:
            results = self._generate(prompts, step, rank)
        if self.overlap and step + 1 < trainer.state.max_steps:
            upcoming = self.next_prompts()
            if upcoming:
                pushing = time.perf_counter()
                self.before_prefetch()
                start += time.perf_counter() - pushing  # a push is sync time, not generation
                self._pending = ((step + 1, tuple(upcoming)), self._thread.submit(self._generate, upcoming, step + 1, rank))
        self.stats.times["generation"] += time.perf_counter() - start
        return _as_trl_output(results)

    def wait_idle(self) -> None:
        """Block until no generation is in flight (before an adapter push: what
        is in flight must finish on the version it started with)."""
        if self._pending is not None:
            start = time.perf_counter()
            self._pending[1].exception()  # waits; an error is raised by the next __call__
            self.stats.times["generation"] += time.perf_counter() - start

    def close(self) -> None:
        self.wait_idle()
        self._pending = None
        if self._thread is not None:
            self._thread.shutdown(wait=True)

    def _generate(self, prompts: list[str], step: int, rank: int) -> list[Any]:
        groups: list[tuple[str, int]] = []
        for prompt in prompts:
            if groups and groups[-1][0] == prompt:
                groups[-1] = (prompt, groups[-1][1] + 1)
            else:
                groups.append((prompt, 1))
        # one engine call per distinct sample count (normally one call per step)
        by_n: dict[int, list[int]] = defaultdict(list)
        for i, (_, n) in enumerate(groups):
            by_n[n].append(i)
        results: list[Any] = [None] * len(groups)
        # The engine seeds request i with seed + i*n; accelerate hands process p the
        # p-th contiguous slice of the global batch.
        step_seed = self.seed * 1_000_003 + step * 7919
        first = rank * len(groups)
        for n, idxs in by_n.items():
            token_ids = [self.tokenizer(groups[i][0], add_special_tokens=False)["input_ids"] for i in idxs]
            # replace(), not a new SamplingConfig: a subclass's fields (the step bench's ignore_eos) stay
            params = dataclasses.replace(self.sampling, n=n, seed=step_seed + (first + idxs[0]) * n)
            for i, res in zip(idxs, self.engine.generate(token_ids, params)):
                results[i] = res
        return results


def _as_trl_output(results: list[Any]) -> dict[str, list]:
    out: dict[str, list] = {"prompt_ids": [], "completion_ids": [], "logprobs": [], "finish_reason": []}
    for res in results:
        for comp in res.completions:
            out["prompt_ids"].append(list(res.prompt_token_ids))
            out["completion_ids"].append(list(comp.token_ids))
            out["logprobs"].append(list(comp.logprobs))
            out["finish_reason"].append(comp.finish_reason)
    return out


class Lookahead:
    """Shows ``feed`` the next optimizer step's prompts. The Trainer reads each step's batches
    through ``get_batch_samples``; RolloutGRPOTrainer's override passes its reads through
    :meth:`read`, which reads one step further and hands the Trainer the batches it would have
    read anyway, in order. TRL generates for a step from its first batch."""

    def __init__(self, feed: RolloutFeed):
        self._ahead: dict[str, Any] = {}  # the iterator read ahead of, and what was read from it
        feed.next_prompts = self.next_prompts

    def read(self, fetch: Callable, epoch_iterator, num_batches: int, device):
        """``fetch(epoch_iterator, num_batches, device)``'s answer for this step (the one read
        ahead at the previous call, if from the same iterator), reading the next step's too."""
        ahead = self._ahead
        if ahead.get("iterator") is epoch_iterator:
            current = ahead["samples"]
        else:
            current = fetch(epoch_iterator, num_batches, device)
        ahead.clear()
        upcoming = fetch(epoch_iterator, num_batches, device)
        if upcoming[0]:
            ahead.update(iterator=epoch_iterator, samples=upcoming)
        return current

    def next_prompts(self) -> list[str] | None:
        """The prompts of the next step's first batch; None at the end of an epoch."""
        return [row["prompt"] for row in self._ahead["samples"][0][0]] if self._ahead else None
