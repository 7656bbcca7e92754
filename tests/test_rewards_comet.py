"""COMET rewards: the shim, tiny offline checkpoints through comet's own load/predict, the shared Ray actor,
the COMET presets, and the start-up error when a model is missing.

Session fixtures (tests/conftest.py): ``tiny_comet`` / ``tiny_comet_qe`` (built once), ``ray_cluster``.
"""
from __future__ import annotations

import math

import pytest

import rewards
from rewards import comet_shim
from rewards.comet import CometModelError, CometReward, build_tiny_comet, shutdown_scorers


def flores(data_dir, lang, n=24):
    return (data_dir / "flores200" / "devtest" / f"{lang}.devtest").read_text(encoding="utf-8").splitlines()[:n]


def wrap(answer: str) -> str:
    return f"<think>plan</think><answer>{answer}</answer>"


@pytest.fixture(scope="module")
def comet_actors(ray_cluster):
    """The Ray cluster; afterwards kill the COMET actors these tests created, so they hold no CPUs later."""
    yield ray_cluster
    shutdown_scorers()


# ------------------------------------------------------------------ shim


def test_shim_patch_1_needed_xlmr_forward_tuple(tiny_comet):
    """transformers 5 returns 2 items, not 3, for return_dict=False: COMET's own forward fails, ours works."""
    import comet
    import torch

    model = comet.load_from_checkpoint(str(tiny_comet / "checkpoints" / "model.ckpt"), local_files_only=True)
    batch = model.encoder.prepare_sample(["Hello world", "a b"])
    with pytest.raises(ValueError, match="not enough values to unpack"):
        comet_shim.ORIGINAL["XLMREncoder.forward"](model.encoder, batch["input_ids"], batch["attention_mask"])
    with torch.no_grad():
        out = model.encoder(batch["input_ids"], batch["attention_mask"])
    assert out["wordemb"].shape[:2] == batch["input_ids"].shape
    assert len(out["all_layers"]) == model.encoder.num_layers


def test_shim_patch_2_pair_builder_in_xlmr_format(tiny_comet_qe):
    import comet

    model = comet.load_from_checkpoint(str(tiny_comet_qe / "checkpoints" / "model.ckpt"), local_files_only=True)
    tok = model.encoder.tokenizer
    assert "build_inputs_with_special_tokens" not in type(tok).__dict__  # gone from transformers 5 itself
    assert tok.build_inputs_with_special_tokens([7, 8], [9]) == [0, 7, 8, 2, 2, 9, 2]
    assert tok.build_inputs_with_special_tokens([7]) == [0, 7, 2]


# ------------------------------------------------------------------ tiny checkpoints through comet's own API


@pytest.mark.parametrize("kind", ["regression", "referenceless", "unified"])
def test_tiny_comet_load_from_checkpoint_predict(tmp_path, data_dir, kind):
    import comet

    src, ref = flores(data_dir, "eng_Latn", 8), flores(data_dir, "deu_Latn", 8)
    samples = [{"src": s, "mt": r, "ref": r} for s, r in zip(src, ref)]
    samples += [{"src": s, "mt": "ganz anders", "ref": r} for s, r in zip(src, ref)]
    scores = []
    for build in ("a", "b"):  # built twice: the same seed gives the same model
        out = build_tiny_comet(tmp_path / build, kind=kind, seed=0)
        model = comet.load_from_checkpoint(str(out / "checkpoints" / "model.ckpt"), local_files_only=True)
        scores.append(model.predict(samples, batch_size=4, gpus=0, progress_bar=False).scores)
    assert len(scores[0]) == len(samples) and all(math.isfinite(x) for x in scores[0])
    assert scores[0] == pytest.approx(scores[1], abs=1e-6)
    assert len({round(x, 6) for x in scores[0]}) > 1  # depends on its input
    other = build_tiny_comet(tmp_path / "c", kind=kind, seed=1)
    other_scores = comet.load_from_checkpoint(str(other / "checkpoints" / "model.ckpt"), local_files_only=True)
    assert other_scores.predict(samples[:4], gpus=0, progress_bar=False).scores != pytest.approx(scores[0][:4])


def test_build_tiny_comet_rejects_unknown_kind(tmp_path):
    with pytest.raises(ValueError, match="kind must be one of"):
        build_tiny_comet(tmp_path, kind="xcomet")


# ------------------------------------------------------------------ Ray actor


def test_comet_actor_scores_like_in_process_and_is_shared(comet_actors, tiny_comet, data_dir):
    ray = comet_actors
    src, ref = flores(data_dir, "eng_Latn"), flores(data_dir, "deu_Latn")
    hyps = [wrap(r) for r in ref[1:]] + [wrap(ref[0])]
    hyps[3], hyps[4] = "no answer tag", None
    cols = {"src_lang": ["eng_Latn"] * len(src), "tgt_lang": ["deu_Latn"] * len(src)}
    refs = list(ref)
    refs[5] = None  # reference-based COMET cannot score this one
    via_actor = rewards.load({"name": "comet", "kwargs": {"model": str(tiny_comet)}})
    local = rewards.load({"name": "comet", "kwargs": {"model": str(tiny_comet), "ray": False}})
    got, want = via_actor(src, hyps, refs, **cols), local(src, hyps, refs, **cols)
    assert got[3] == got[4] == 0.0 and got[5] is None
    assert got == pytest.approx(want, abs=1e-5)
    assert via_actor.parts[0].fn.info == {"model": str(tiny_comet), "device": "cpu", "uses_reference": True,
                                          "class": "RegressionMetric"}
    # a second learner asking for the same model gets the same named actor in namespace r1t1
    again = rewards.load("comet", comet_model=str(tiny_comet))
    assert again.parts[0].fn._actor._actor_id == via_actor.parts[0].fn._actor._actor_id
    assert ray.get_actor(f"comet-scorer:{tiny_comet}", namespace="r1t1")._actor_id == again.parts[0].fn._actor._actor_id


def test_comet_kiwi_actor_is_reference_free(comet_actors, tiny_comet_qe, data_dir):
    src, ref = flores(data_dir, "eng_Latn", 6), flores(data_dir, "deu_Latn", 6)
    kiwi = rewards.load({"name": "comet_kiwi", "kwargs": {"model": str(tiny_comet_qe)}})
    out = kiwi(src, [wrap(r) for r in ref], None, src_lang="eng_Latn", tgt_lang="deu_Latn")
    assert all(isinstance(x, float) and math.isfinite(x) for x in out)
    assert kiwi.parts[0].fn.info["uses_reference"] is False
    assert kiwi(src[:1], [wrap(ref[0])], [None], tgt_lang="deu_Latn") == pytest.approx(out[:1])


def test_r1t1_preset_formula(comet_actors, tiny_comet, data_dir):
    src, ref = flores(data_dir, "eng_Latn", 4), flores(data_dir, "deu_Latn", 4)
    hyps = [wrap(ref[0]), wrap(ref[1]), ref[2], "<think>x</think><answer>" + ref[3]]  # last two fail the format
    reward = rewards.load("r1t1", comet_model=str(tiny_comet))
    out = reward.score(src, hyps, ref, src_lang="eng_Latn", tgt_lang="deu_Latn")
    assert set(out.parts) == {"format", "comet"}
    for i in range(2):
        assert out.total[i] == pytest.approx(0.2 + max(0.0, out.parts["comet"][i]))
    assert out.total[2:] == [0.0, 0.0]
    assert out.parts["comet"][3] != 0.0  # COMET still scored the leniently extracted answer; the total gates it


def test_mt_r1_zero_preset_formula(comet_actors, tiny_comet_qe, data_dir):
    src, ref = flores(data_dir, "eng_Latn", 3), flores(data_dir, "deu_Latn", 3)
    hyps = [wrap(ref[0]), wrap(ref[2]), "plain text, no tags"]
    reward = rewards.load("mt-r1-zero", comet_model=str(tiny_comet_qe))
    out = reward.score(src, hyps, ref, src_lang="eng_Latn", tgt_lang="deu_Latn")
    assert set(out.parts) == {"format", "bleu", "comet_kiwi"}
    assert out.parts["format"] == [1.0, 1.0, -1.0]
    assert out.parts["bleu"][0] == pytest.approx(100.0) and out.parts["bleu"][1] < 99.0
    for i in range(2):
        assert out.total[i] == pytest.approx(1.0 + out.parts["bleu"][i] / 100 + out.parts["comet_kiwi"][i])
    assert out.total[2] == -3.0


# ------------------------------------------------------------------ missing models fail clearly at start-up


def test_missing_hub_model_offline_names_model_and_remedies(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    name = "Unbabel/r1t1-test-model-that-is-nowhere"
    with pytest.raises(CometModelError) as err:
        CometReward(model=name, local_files_only=True, ray=False)
    text = str(err.value)
    assert name in text and "HF_HOME" in text and "checkpoints/model.ckpt" in text and "online" in text
    with pytest.raises(rewards.RewardSpecError, match="r1t1-test-model-that-is-nowhere"):
        rewards.load({"name": "comet", "kwargs": {"model": name, "local_files_only": True}})


def test_missing_local_checkpoint_is_clear(tmp_path):
    with pytest.raises(CometModelError, match="no such file or directory"):
        CometReward(model=str(tmp_path / "nothing-here"), ray=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CometModelError, match="has no checkpoints/model.ckpt"):
        CometReward(model=str(tmp_path / "empty"), ray=False)
