"""COMET rewards (reference-based and QE) through unbabel-comet, served by one shared Ray actor.

Why an actor: a COMET model is ~2 GB; every learner process loading its own
copy would waste memory and start-up time. :class:`CometScorer` loads the model
once (on a GPU when given one, else CPU) and scores batches; learner processes
find it by name (get-or-create, namespace ``r1t1``), so all of them share it.

Models: any hub id (default ``Unbabel/wmt22-comet-da``, QE default
``Unbabel/wmt22-cometkiwi-da``, which is gated: accept its licence on the hub
and log in once) or a local checkpoint (the directory that holds
``checkpoints/model.ckpt`` and ``hparams.yaml``, or the ``.ckpt`` file). Offline
without the model, start-up fails with :class:`CometModelError` saying how to
supply it. Note that a hub COMET model also needs its encoder (xlm-roberta-large
for wmt22-comet-da, microsoft/infoxlm-large for CometKiwi) in the HF cache.

:func:`build_tiny_comet` makes a tiny, randomly initialised COMET checkpoint
offline with unbabel-comet's own classes: for tests and offline demos of the
plumbing (its scores carry no meaning).
"""
from __future__ import annotations

import logging
import os
import string
from pathlib import Path

from rewards import comet_shim
from rewards.base import answers, batch_size
from rl.core.ray_cluster import NAMESPACE  # the pool's: one namespace for all of a run's actors
from rl.core.errors import UserError

log = logging.getLogger("rewards")

DEFAULT_MODEL = "Unbabel/wmt22-comet-da"
DEFAULT_QE_MODEL = "Unbabel/wmt22-cometkiwi-da"


class CometModelError(UserError, RuntimeError):
    """The COMET model cannot be found or loaded; the message says how to supply it."""


def _offline_env() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def resolve_checkpoint(model: str, local_files_only: bool | None = None, download: bool = True) -> Path | None:
    """Local ``.ckpt`` path for a checkpoint dir/file or a hub id (from the HF cache, or downloaded when online).
    ``download=False`` (the dry run): None for a hub id that is not cached but could still be downloaded."""
    path = Path(model).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        ckpt = path / "checkpoints" / "model.ckpt"
        if not ckpt.is_file():
            raise CometModelError(f"COMET checkpoint dir {path} has no checkpoints/model.ckpt")
        return ckpt
    if model.startswith((".", "/", "~")) or model.endswith(".ckpt") or model.count("/") != 1:
        raise CometModelError(f"COMET model {model!r}: no such file or directory, and not a hub id (org/name)")
    from huggingface_hub import snapshot_download

    offline = _offline_env() if local_files_only is None else local_files_only
    try:
        return Path(snapshot_download(repo_id=model, local_files_only=True)) / "checkpoints" / "model.ckpt"
    except Exception as exc:  # not in the cache
        reason = f"{type(exc).__name__}: {exc}"
    if not offline and not download:
        return None
    if not offline:
        try:
            return Path(snapshot_download(repo_id=model)) / "checkpoints" / "model.ckpt"
        except Exception as exc:
            reason = f"download failed: {type(exc).__name__}: {exc}"
    hf_home = os.environ.get("HF_HOME", "~/.cache/huggingface")
    raise CometModelError(
        f"COMET model {model!r} is not available{' offline' if offline else ''} ({reason.splitlines()[0][:300]}).\n"
        f"Supply it in one of these ways:\n"
        f"  - a local checkpoint: set the model to the directory holding checkpoints/model.ckpt and hparams.yaml;\n"
        f"  - the Hugging Face cache: copy a cache that has it into HF_HOME (now {hf_home}), made on an online "
        f"machine with: python -c \"from huggingface_hub import snapshot_download; snapshot_download('{model}')\";\n"
        f"  - run once online (without HF_HUB_OFFLINE=1): it is downloaded automatically.\n"
        f"The model's encoder (see pretrained_model in its hparams.yaml) must be in the cache as well."
    )


def load_model(model: str, local_files_only: bool | None = None):
    """``comet.load_from_checkpoint`` on a resolved checkpoint, with errors that name the model."""
    import comet
    import yaml

    comet_shim.apply()  # here, not at import: finding a checkpoint (the dry run) needs no torch

    ckpt = resolve_checkpoint(model, local_files_only)
    offline = _offline_env() if local_files_only is None else local_files_only
    try:
        return comet.load_from_checkpoint(str(ckpt), local_files_only=offline or _is_local_encoder(ckpt))
    except Exception as exc:
        hparams = ckpt.parents[1] / "hparams.yaml"
        encoder = yaml.safe_load(hparams.read_text()).get("pretrained_model") if hparams.is_file() else "?"
        raise CometModelError(
            f"COMET model {model!r} ({ckpt}) failed to load: {type(exc).__name__}: {exc}\n"
            f"Its encoder {encoder!r} (tokenizer and config) must be a local dir or in the Hugging Face cache."
        ) from exc


def _is_local_encoder(ckpt: Path) -> bool:
    import yaml

    hparams = ckpt.parents[1] / "hparams.yaml"
    if not hparams.is_file():
        return False
    encoder = yaml.safe_load(hparams.read_text()).get("pretrained_model", "")
    return bool(encoder) and Path(encoder).is_dir()


def uses_reference(model) -> bool:
    """Whether a loaded COMET model reads references (wmt22-comet-da yes; CometKiwi / QE no)."""
    kind = type(model).__name__
    if kind == "ReferencelessRegression":
        return False
    if kind in ("UnifiedMetric", "XCOMETMetric"):
        return "ref" in list(model.hparams.input_segments)
    return True


def _quiet_lightning() -> None:
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric", "comet"):
        logging.getLogger(name).setLevel(logging.WARNING)
    import warnings

    warnings.filterwarnings("ignore", module="pytorch_lightning")


class CometScorer:
    """Loads one COMET model and scores batches; used in-process or as the Ray actor (``ray.remote(CometScorer)``)."""

    def __init__(self, model: str = DEFAULT_MODEL, batch_size: int = 64, use_gpu: bool = False,
                 local_files_only: bool | None = None):
        import torch

        _quiet_lightning()
        self.model_name = model
        self.model = load_model(model, local_files_only)
        self.batch_size = batch_size
        self.gpus = 1 if use_gpu and torch.cuda.is_available() else 0
        self.uses_reference = uses_reference(self.model)

    def info(self) -> dict:
        return {"model": self.model_name, "device": "cuda" if self.gpus else "cpu",
                "uses_reference": self.uses_reference, "class": type(self.model).__name__}

    def score(self, sources: list[str], translations: list[str], references: list[str] | None = None) -> list[float]:
        if not translations:
            return []
        samples = [{"src": s, "mt": t} for s, t in zip(sources, translations)]
        if self.uses_reference:
            if references is None:
                raise ValueError(f"COMET model {self.model_name} needs references")
            for sample, ref in zip(samples, references):
                sample["ref"] = ref
        out = self.model.predict(samples, batch_size=self.batch_size, gpus=self.gpus, progress_bar=False)
        return [float(x) for x in out.scores]


_ACTORS: dict[tuple[str, str], object] = {}  # handles this process holds, so actors outlive reward objects


def get_scorer(model: str = DEFAULT_MODEL, batch_size: int = 64, gpus: float | None = None, num_cpus: float = 1,
               name: str | None = None, namespace: str = NAMESPACE, detached: bool = False,
               local_files_only: bool | None = None, startup_timeout_s: float = 1800):
    """Get or create the named :class:`CometScorer` Ray actor and wait until its model is loaded.

    ``gpus=None``: one GPU when the Ray cluster has any, else CPU. A non-detached
    actor lives as long as the process that created it (this module keeps a
    handle, so dropping a reward object does not kill it); ``detached=True``
    keeps it alive after that process too (end it with :func:`shutdown_scorers`
    or ``ray.kill``).
    """
    import ray

    from rl.core.ray_cluster import init_ray

    init_ray()  # the run's cluster if this process joined one (rl/learn/grpo.py does first), else $RAY_ADDRESS or local
    if gpus is None:
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
    name = name or f"comet-scorer:{model}"
    actor = _ACTORS.get((namespace, name))
    if actor is None:
        actor = ray.remote(CometScorer).options(
            name=name, namespace=namespace, get_if_exists=True, lifetime="detached" if detached else None,
            num_gpus=gpus, num_cpus=num_cpus, max_concurrency=1,
        ).remote(model, batch_size, gpus > 0, local_files_only)
    try:
        ray.get(actor.info.remote(), timeout=startup_timeout_s)
    except ray.exceptions.GetTimeoutError as exc:
        raise CometModelError(
            f"COMET actor {name!r} not ready after {startup_timeout_s:.0f}s: is the Ray cluster short of "
            f"{gpus} GPU / {num_cpus} CPU? Set reward.comet_gpus (0 runs COMET on CPU)."
        ) from exc
    except ray.exceptions.RayActorError as exc:
        _ACTORS.pop((namespace, name), None)
        raise CometModelError(f"COMET actor {name!r} failed to start or has died:\n{exc}") from exc
    _ACTORS[(namespace, name)] = actor
    return actor


def shutdown_scorers() -> None:
    """Kill the COMET actors this process holds (frees their CPUs/GPU; the next reward starts a new one)."""
    import ray

    while _ACTORS:
        _, actor = _ACTORS.popitem()
        if ray.is_initialized():
            ray.kill(actor)


class CometReward:
    """Reward: COMET score of each extracted answer (native COMET scale, about 0-1).

    No answer -> 0.0; no source, or no reference for a reference-based model -> None.
    ``ray=False`` loads the model in this process instead of the shared actor.
    """

    default_model = DEFAULT_MODEL

    @classmethod
    def check(cls, model: str | None = None, local_files_only: bool | None = None, **_settings) -> str | None:
        """What ``__init__`` checks first, without loading the model, starting Ray or downloading
        (for ``rewards.check``, the dry run): raises :class:`CometModelError` when the checkpoint
        cannot be found; returns a note when a hub model is not cached yet (the run downloads it)."""
        model = model or cls.default_model
        if resolve_checkpoint(model, local_files_only, download=False) is None:
            return f"COMET model {model!r} is not in the Hugging Face cache yet; the run downloads it at start"
        return None

    def __init__(self, model: str | None = None, batch_size: int = 64, gpus: float | None = None,
                 num_cpus: float = 1, ray: bool = True, actor_name: str | None = None,
                 namespace: str = NAMESPACE, detached: bool = False, local_files_only: bool | None = None):
        self.model = model or self.default_model
        resolve_checkpoint(self.model, local_files_only)  # fail here, clearly, before any actor starts
        if ray:
            import ray as _ray

            self._actor = get_scorer(self.model, batch_size, gpus, num_cpus, name=actor_name, namespace=namespace,
                                     detached=detached, local_files_only=local_files_only)
            info = _ray.get(self._actor.info.remote())
            self._score = lambda *args: _ray.get(self._actor.score.remote(*args))
        else:
            import torch

            scorer = CometScorer(self.model, batch_size, bool(gpus) or (gpus is None and torch.cuda.is_available()),
                                 local_files_only)
            info = scorer.info()
            self._score = scorer.score
        self.uses_reference = info["uses_reference"]
        self.info = info

    def __call__(self, sources, hypotheses, references, **columns) -> list[float | None]:
        n = batch_size(sources, hypotheses, references)
        srcs = list(sources) if sources is not None else [None] * n
        refs = list(references) if references is not None else [None] * n
        out: list[float | None] = [None] * n
        todo = []
        texts = answers(hypotheses, columns)
        for i, ans in enumerate(texts):
            if not isinstance(srcs[i], str) or (self.uses_reference and not isinstance(refs[i], str)):
                continue
            if not ans:
                out[i] = 0.0
                continue
            todo.append(i)
        if todo:
            scores = self._score([srcs[i] for i in todo], [texts[i] for i in todo],
                                 [refs[i] for i in todo] if self.uses_reference else None)
            for i, s in zip(todo, scores):
                out[i] = s
        return out


class CometKiwiReward(CometReward):
    """Reference-free COMET (QE); default ``Unbabel/wmt22-cometkiwi-da``."""

    default_model = DEFAULT_QE_MODEL


# ---------------------------------------------------------------------------- tiny offline checkpoint

_TINY_TEXTS = [
    "The quick brown fox jumps over the lazy dog.", "A small model for tests only.",
    "Der schnelle braune Fuchs springt über den faulen Hund.", "Le renard brun rapide saute par-dessus le chien.",
    "El zorro marrón salta sobre el perro perezoso.", "Быстрая коричневая лиса прыгает через ленивую собаку.",
    "敏捷的棕色狐狸跳过了懒狗。", "素早い茶色の狐がのろまな犬を飛び越える。", "빠른 갈색 여우가 게으른 개를 뛰어넘는다.",
    "สุนัขจิ้งจอกสีน้ำตาลกระโดดข้ามสุนัขขี้เกียจ", "الثعلب البني السريع يقفز فوق الكلب الكسول.",
    "तेज़ भूरी लोमड़ी आलसी कुत्ते के ऊपर कूदती है।", "Η γρήγορη καφέ αλεπού πηδά πάνω από τον τεμπέλη σκύλο.",
]
_TINY_KINDS = {
    # kind: (COMET class name, class_identifier, extra constructor kwargs)
    "regression": ("RegressionMetric", "regression_metric", {}),  # like wmt22-comet-da
    "referenceless": ("ReferencelessRegression", "referenceless_regression_metric", {}),  # like wmt21-comet-qe
    "unified": ("UnifiedMetric", "unified_metric", {"input_segments": ["mt", "src"], "word_layer": 2}),  # like CometKiwi
}


def build_tiny_comet(out_dir: str | Path, kind: str = "regression", seed: int = 0,
                     texts: list[str] | None = None) -> Path:
    """Build a tiny random COMET checkpoint offline; returns ``out_dir`` (load it with ``model=str(out_dir)``).

    An XLM-R config + a tokenizer built here with ``tokenizers`` go to
    ``out_dir/encoder``; the COMET class is built on them without pretrained
    weights and saved as ``checkpoints/model.ckpt`` beside ``hparams.yaml``, the
    layout ``comet.load_from_checkpoint`` reads. Deterministic for a seed.
    The checkpoint records the encoder's absolute path: rebuild rather than move it.
    """
    import json

    import comet.models as cm
    import pytorch_lightning as ptl

    comet_shim.apply()
    import torch
    import yaml
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import XLMRobertaConfig

    if kind not in _TINY_KINDS:
        raise ValueError(f"build_tiny_comet: kind must be one of {sorted(_TINY_KINDS)}, got {kind!r}")
    out = Path(out_dir).resolve()
    enc = out / "encoder"
    enc.mkdir(parents=True, exist_ok=True)

    # A fixed vocabulary instead of a trained one: tokenizers' Unigram trainer is not deterministic across runs.
    # Pieces: XLM-R's special tokens (ids 0..3, mask last), every character seen (plus printable ASCII),
    # and each whole word of ``texts``; equal scores, so Unigram prefers whole words, else characters.
    corpus = list(texts or _TINY_TEXTS)
    chars = sorted((set("".join(corpus)) | set(string.printable.strip())) - {" "})
    words = sorted({"\u2581" + w for line in corpus for w in line.split()} - {"\u2581" + c for c in chars})
    vocab = [(t, 0.0) for t in ("<s>", "<pad>", "</s>", "<unk>")] + [(p, -1.0) for p in ["\u2581", *chars, *words]]
    tok = Tokenizer(models.Unigram(vocab + [("<mask>", 0.0)], unk_id=3))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    tok.save(str(enc / "tokenizer.json"))
    (enc / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "XLMRobertaTokenizer", "model_max_length": 512, "bos_token": "<s>", "eos_token": "</s>",
        "unk_token": "<unk>", "sep_token": "</s>", "cls_token": "<s>", "pad_token": "<pad>", "mask_token": "<mask>",
    }, indent=1))
    XLMRobertaConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=514, pad_token_id=1, bos_token_id=0,
                     eos_token_id=2).save_pretrained(enc)

    cls_name, identifier, extra = _TINY_KINDS[kind]
    _quiet_lightning()
    with torch.random.fork_rng():  # deterministic weights without touching the caller's RNG
        torch.manual_seed(seed)
        model = getattr(cm, cls_name)(pretrained_model=str(enc), load_pretrained_weights=False,
                                      local_files_only=True, hidden_sizes=[64], **extra)
    hparams = {**dict(model.hparams), "class_identifier": identifier}
    (out / "checkpoints").mkdir(exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": hparams,
                "pytorch-lightning_version": ptl.__version__}, out / "checkpoints" / "model.ckpt")
    (out / "hparams.yaml").write_text(yaml.safe_dump(hparams))
    return out
