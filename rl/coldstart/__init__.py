"""The R1-T1 cold start a user can run: a teacher model writes CoT for the training pairs.

    python rl/synth.py --config configs/synth-toy.yaml          # -> runs/synth-toy/cot.jsonl
    python rl/sft.py --config configs/toy.yaml --sft.data_path runs/synth-toy/cot.jsonl

- prompts.py : the teacher's prompt (one template in full) and the round-robin template plan;
- filters.py : which candidate is kept, and why the others are rejected;
- store.py   : the resumable output (append only, cut last line repaired) and the report;
- synth.py   : the teacher (checked before any work), the loop, ``run_synth`` and ``main``.

The output is the CoT JSONL rl/sft.py reads (rl/learn/sft.py: load_cot_jsonl), with the
template's name and the scores of each kept completion.
"""
