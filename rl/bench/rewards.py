"""Reward scoring throughput: is scoring a bottleneck of a GRPO step? (``python -m rl.bench rewards``)

Scores ``n`` (hypothesis, reference) pairs laid out as GRPO produces them
(``n / 8`` prompts x 8 different samples each) with the training rewards, and
prints sentences per second for chrF, chrF++, BLEU, the guards, and the tiny
COMET model served by the Ray actor (on ``comet_n`` pairs: a CPU COMET is far
slower). For reference it also times sacrebleu's own per-call
``sentence_chrf`` / ``sentence_bleu``. Sentences come from FLORES-200 (eng -> deu)
when ``data_dir`` has it, else from a synthetic generator.
"""
from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path

GROUP = 8  # samples per prompt, as in a GRPO group


def _sentences(data_dir: str | Path | None, n_prompts: int) -> tuple[list[str], list[str]]:
    root = Path(data_dir) if data_dir else Path(__file__).resolve().parents[3] / "shared" / "data"
    src_file, ref_file = root / "flores200" / "dev" / "eng_Latn.dev", root / "flores200" / "dev" / "deu_Latn.dev"
    if src_file.is_file() and ref_file.is_file():
        src = src_file.read_text(encoding="utf-8").splitlines()
        ref = ref_file.read_text(encoding="utf-8").splitlines()
    else:  # synthetic, but with realistic sentence lengths
        rng = random.Random(0)
        words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyzäöü") for _ in range(rng.randint(2, 10)))
                 for _ in range(3000)]
        src = [" ".join(rng.choices(words, k=rng.randint(8, 35))) + "." for _ in range(1000)]
        ref = [" ".join(rng.choices(words, k=rng.randint(8, 35))) + "." for _ in range(1000)]
    return [src[i % len(src)] for i in range(n_prompts)], [ref[i % len(ref)] for i in range(n_prompts)]


def _group_samples(ref: str, k: int, rng: random.Random) -> list[str]:
    """k different imperfect translations of one reference: each drops or swaps a few words."""
    words = ref.split()
    out = []
    for _ in range(k):
        w = list(words)
        for _ in range(max(1, len(w) // 8)):
            i = rng.randrange(len(w))
            if rng.random() < 0.5 and len(w) > 1:
                del w[i]
            else:
                j = rng.randrange(len(w))
                w[i], w[j] = w[j], w[i]
        out.append(f"<think>Translate word by word.</think><answer>{' '.join(w)}</answer>")
    return out


def _rate(fn, n: int) -> float:
    t = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t)


def bench_rewards(n: int = 10000, comet_n: int = 1000, data_dir: str | Path | None = None,
                  comet: bool = True) -> dict:
    """Sentences/s per reward; returns the figures as a dict (also printed)."""
    import sacrebleu

    from rewards import lexical
    from rewards.guards import copy_guard, lang_guard
    from rl.core.parsing import extract_answer

    rng = random.Random(0)
    srcs, refs = _sentences(data_dir, max(1, n // GROUP))
    sources = [s for s in srcs for _ in range(GROUP)][:n]
    references = [r for r in refs for _ in range(GROUP)][:n]
    hyps = [h for r in refs for h in _group_samples(r, GROUP, rng)][:n]
    cols = {"src_lang": ["eng_Latn"] * n, "tgt_lang": ["deu_Latn"] * n}
    plain = [extract_answer(h) for h in hyps]
    k = min(n, 2000)  # the slow per-call baselines on a subset

    results = {"n": n}
    results["chrf"] = _rate(lambda: lexical.chrf(sources, hyps, references, **cols), n)
    results["chrfpp"] = _rate(lambda: lexical.chrfpp(sources, hyps, references, **cols), n)
    results["bleu"] = _rate(lambda: lexical.bleu(sources, hyps, references, **cols), n)
    results["copy_guard"] = _rate(lambda: copy_guard(sources, hyps, references, **cols), n)
    results["lang_guard"] = _rate(lambda: lang_guard(sources, hyps, references, **cols), n)
    results["sacrebleu_sentence_chrf_per_call"] = _rate(
        lambda: [sacrebleu.sentence_chrf(h, [r]) for h, r in zip(plain[:k], references[:k])], k)
    results["sacrebleu_sentence_bleu_per_call"] = _rate(
        lambda: [sacrebleu.sentence_bleu(h, [r]) for h, r in zip(plain[:k], references[:k])], k)
    if comet and comet_n > 0:
        results.update(_bench_comet(sources[:comet_n], hyps[:comet_n], references[:comet_n]))
    for key, value in results.items():
        if key != "n" and not key.endswith("_s"):
            print(f"{key:36s} {value:10.0f} sentences/s")
        elif key.endswith("_s"):
            print(f"{key:36s} {value:10.1f} s")
    return results


def _bench_comet(sources, hyps, references) -> dict:
    import ray

    from rewards.comet import CometReward, build_tiny_comet, shutdown_scorers

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, namespace="r1t1")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = build_tiny_comet(Path(tmp) / "tiny_comet")
            t = time.perf_counter()
            reward = CometReward(model=str(ckpt))  # the shared Ray actor, CPU
            startup = time.perf_counter() - t
            n = len(hyps)
            cols = {"src_lang": ["eng_Latn"] * n, "tgt_lang": ["deu_Latn"] * n}
            rate = _rate(lambda: reward(sources, hyps, references, **cols), n)
            shutdown_scorers()
    finally:
        if started:
            ray.shutdown()
    return {"tiny_comet_actor": rate, "tiny_comet_actor_startup_s": startup}


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10000, help="pairs for the lexical rewards and guards")
    parser.add_argument("--comet-n", type=int, default=1000, help="pairs for the tiny COMET actor (0 skips it)")
    parser.add_argument("--data-dir", default=None, help="dir with flores200/ (default ../shared/data if present)")
    args = parser.parse_args()
    bench_rewards(args.n, args.comet_n, args.data_dir, comet=args.comet_n > 0)


if __name__ == "__main__":
    main()
