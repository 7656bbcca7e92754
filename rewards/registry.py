"""``rewards.load(spec)``: turn a reward spec into a :class:`~rewards.combine.Combination`.

A spec is one of
* a registered name: ``"chrf"`` (see :func:`known`);
* a preset name: ``"r1t1"``, ``"mt-r1-zero"``, ``"chrf-format"``;
* a name from the entry-point group ``r1t1.rewards`` of an installed package
  (``[project.entry-points."r1t1.rewards"] my_reward = "my_pkg.rewards:my_reward"``);
* an import path ``"package.module:function"`` (or ``:Class``);
* a dict ``{"name": <any of the above>, "weight": 1.0, "kwargs": {...}, "label": "part name"}``;
* a list of these: a weighted (linear) combination.

What a name resolves to may be a reward function (``kwargs`` are bound to it)
or a class whose instances are rewards (``kwargs`` go to its constructor, so a
plug-in can load a model once). Either way its signature must accept
``(sources, hypotheses, references, **columns)``; that, unknown names, import
errors and bad ``kwargs`` all fail here, at load, with a message saying which.
Built-in names win over entry points of the same name.

``load`` always returns a Combination (one part for a single name), so callers
can use ``.score`` for per-part logging whatever the spec.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
from importlib.metadata import entry_points
from typing import Any

from rewards.base import RewardSpecError
from rewards.combine import Combination, Part
from rewards.presets import PRESET_COMET, PRESETS

ENTRY_POINT_GROUP = "r1t1.rewards"

# name -> object or lazy "module:attr" (so torch/comet load only when used)
_REGISTRY: dict[str, Any] = {
    "format": "rewards.format:format_reward",
    "chrf": "rewards.lexical:chrf",
    "chrfpp": "rewards.lexical:chrfpp",
    "bleu": "rewards.lexical:bleu",
    "comet": "rewards.comet:CometReward",
    "comet_kiwi": "rewards.comet:CometKiwiReward",
    "copy_guard": "rewards.guards:copy_guard",
    "lang_guard": "rewards.guards:lang_guard",
    "length_guard": "rewards.guards:length_guard",
    "source_coverage": "rewards.reasoning:source_coverage",
}
_COMET_NAMES = {"comet", "comet_kiwi"}


def register(name: str, obj: Any = None):
    """Register a reward function or class under ``name`` (usable as a decorator)."""
    if obj is None:
        return lambda o: register(name, o) or o
    if name in PRESETS:
        raise RewardSpecError(f"{name!r} is a preset name; pick another reward name")
    _REGISTRY[name] = obj
    return obj


def _entry_points() -> dict:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def known() -> dict[str, list[str]]:
    """Every name ``load`` accepts, by kind."""
    return {"rewards": sorted(_REGISTRY), "presets": sorted(PRESETS), "entry_points": sorted(_entry_points())}


def load(spec: Any, *, comet_model: str | None = None, comet_batch_size: int | None = None,
         comet_gpus: float | None = None) -> Combination:
    """Build the reward for ``spec``. The ``comet_*`` options (RewardConfig's) fill in COMET parts and presets
    that do not set them in their own ``kwargs``."""
    return _load(spec, _comet_options(comet_model, comet_batch_size, comet_gpus), notes=None)


def check(spec: Any, *, comet_model: str | None = None, comet_batch_size: int | None = None,
          comet_gpus: float | None = None) -> list[str]:
    """Everything ``load`` checks, without building a reward (the dry run): names resolve, kwargs
    bind, and a class reward's ``check`` classmethod runs instead of its constructor (COMET: the
    checkpoint is found, nothing loaded, no Ray, no download). Raises :class:`RewardSpecError`;
    returns notes worth printing (a COMET model the run will download)."""
    notes: list[str] = []
    _load(spec, _comet_options(comet_model, comet_batch_size, comet_gpus), notes)
    return notes


def load_from_config(reward_cfg) -> Combination:
    """``load`` for an rl.core.config RewardConfig (spec, comet_model, comet_batch_size, comet_gpus)."""
    return load(reward_cfg.spec, comet_model=reward_cfg.comet_model, comet_batch_size=reward_cfg.comet_batch_size,
                comet_gpus=reward_cfg.comet_gpus)


def check_from_config(reward_cfg) -> list[str]:
    """``check`` for an rl.core.config RewardConfig."""
    return check(reward_cfg.spec, comet_model=reward_cfg.comet_model, comet_batch_size=reward_cfg.comet_batch_size,
                 comet_gpus=reward_cfg.comet_gpus)


def _comet_options(model, batch_size, gpus) -> dict:
    comet = {"model": model, "batch_size": batch_size, "gpus": gpus}
    return {k: v for k, v in comet.items() if v is not None}


def _load(spec: Any, comet: dict, notes: list[str] | None) -> Combination:
    """``load`` (notes None: build every part) or ``check`` (collect notes, build nothing)."""
    if isinstance(spec, str) and spec in PRESETS:
        return _preset(spec, comet, notes)
    if isinstance(spec, (list, tuple)):
        if not spec:
            raise RewardSpecError("empty reward list")
        return Combination([_part(item, comet, notes) for item in spec], name="+".join(_label(s) for s in spec))
    part = _part(spec, comet, notes)
    return Combination([part], name=part.name)


@contextlib.contextmanager
def _as_spec_error(what: str):
    """A reward that fails to build (a missing COMET model, say) is a bad spec for its caller: one clear line."""
    try:
        yield
    except RewardSpecError:
        raise
    except Exception as exc:
        raise RewardSpecError(f"{what} failed: {type(exc).__name__}: {exc}") from exc


def _preset(name: str, comet: dict, notes: list[str] | None = None) -> Combination | None:
    with _as_spec_error(f"reward {name!r}"):
        if notes is None:
            return PRESETS[name](**{f"comet_{k}": v for k, v in comet.items()})
        if name in PRESET_COMET:  # the COMET reward the preset builds, checked as that reward is
            _check_class(_resolve(PRESET_COMET[name]), comet, name, notes)
        return None


def _label(spec: Any) -> str:
    if isinstance(spec, dict):
        return str(spec.get("label") or spec.get("name"))
    return str(spec)


def _part(spec: Any, comet: dict, notes: list[str] | None = None) -> Part:
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict):
        raise RewardSpecError(f"a reward spec is a name, 'module:function', dict or list; got {spec!r}")
    unknown = set(spec) - {"name", "weight", "kwargs", "label"}
    if unknown or "name" not in spec:
        raise RewardSpecError(f"reward spec {spec!r}: keys are name, weight, kwargs, label"
                              + (f"; unknown: {sorted(unknown)}" if unknown else "; 'name' is missing"))
    name, kwargs = spec["name"], dict(spec.get("kwargs") or {})
    try:
        weight = float(spec.get("weight", 1.0))
    except (TypeError, ValueError):
        raise RewardSpecError(f"reward {name!r}: weight must be a number, got {spec.get('weight')!r}") from None
    label = str(spec.get("label") or name)
    if name in PRESETS:
        if kwargs:
            raise RewardSpecError(f"preset {name!r} takes no kwargs; list its parts instead to change them")
        return Part(label, weight, _preset(name, comet, notes))
    if name in _COMET_NAMES:
        kwargs = {**comet, **kwargs}
    return Part(label, weight, instantiate(_resolve(name), kwargs, name, notes))


def _resolve(name: str) -> Any:
    if not isinstance(name, str) or not name:
        raise RewardSpecError(f"reward name must be a non-empty string, got {name!r}")
    if name in _REGISTRY:
        target = _REGISTRY[name]
        return _import(target, name) if isinstance(target, str) else target
    eps = _entry_points()
    if name in eps:
        try:
            return eps[name].load()
        except Exception as exc:
            raise RewardSpecError(f"reward {name!r} (entry point {eps[name].value!r} in group "
                                  f"{ENTRY_POINT_GROUP!r}) failed to import: {type(exc).__name__}: {exc}") from exc
    if ":" in name:
        return _import(name, name)
    k = known()
    raise RewardSpecError(f"unknown reward {name!r}. Known rewards: {', '.join(k['rewards'])}; presets: "
                          f"{', '.join(k['presets'])}; entry points ({ENTRY_POINT_GROUP}): "
                          f"{', '.join(k['entry_points']) or 'none installed'}; or give 'package.module:function'.")


def _import(path: str, name: str) -> Any:
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise RewardSpecError(f"reward {name!r}: an import path is 'package.module:function', got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise RewardSpecError(f"reward {name!r}: cannot import module {module_name!r}: "
                              f"{type(exc).__name__}: {exc}") from exc
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise RewardSpecError(f"reward {name!r}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def instantiate(obj: Any, kwargs: dict, name: str, notes: list[str] | None = None):
    """A reward callable from a function (kwargs bound) or a class (kwargs to the constructor), signature-checked.
    With ``notes`` (``check``) a class is not constructed: its ``check`` classmethod runs, if it has one."""
    if inspect.isclass(obj):
        _check_binds(obj, (), kwargs, f"reward {name!r}: {obj.__qualname__}(...) does not accept kwargs {kwargs}")
        if notes is not None:
            return _check_class(obj, kwargs, name, notes)
        try:
            fn = obj(**kwargs)
        except RewardSpecError:
            raise
        except Exception as exc:
            raise RewardSpecError(f"reward {name!r}: {obj.__qualname__}(**{kwargs}) failed: "
                                  f"{type(exc).__name__}: {exc}") from exc
        _check_reward_signature(fn, {}, name)
        return fn
    if not callable(obj):
        raise RewardSpecError(f"reward {name!r} resolves to {type(obj).__name__}, which is not callable")
    _check_reward_signature(obj, kwargs, name)
    return functools.partial(obj, **kwargs) if kwargs else obj


def _check_class(obj: Any, kwargs: dict, name: str, notes: list[str]) -> None:
    """Run a reward class's optional ``check(**kwargs) -> note | None`` (cheap: what its constructor would find wrong)."""
    hook = getattr(obj, "check", None)
    if callable(hook):
        with _as_spec_error(f"reward {name!r}: {obj.__qualname__}.check"):
            note = hook(**kwargs)
        if note:
            notes.append(f"reward {name!r}: {note}")


_CONTRACT = "fn(sources, hypotheses, references, **columns) -> list[float | None]"


def _check_reward_signature(fn: Any, kwargs: dict, name: str) -> None:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # builtins without a signature: trust them
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
        raise RewardSpecError(f"reward {name!r}: signature {sig} takes no **columns; a reward is {_CONTRACT}")
    named = {p.name for p in sig.parameters.values()
             if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)}
    stray = sorted(set(kwargs) - named)
    if stray:  # **columns would swallow them silently: a typo must fail here instead
        options = sorted(named - {"sources", "hypotheses", "references"})
        raise RewardSpecError(f"reward {name!r}: unknown kwargs {stray}; it takes {options or 'none'}")
    probe = ([""], [""], [""])
    _check_binds(fn, probe, {"src_lang": ["x"], "tgt_lang": ["x"], **kwargs},
                 f"reward {name!r}: signature {sig} does not match {_CONTRACT}"
                 + (f" with kwargs {kwargs}" if kwargs else ""))


def _check_binds(fn: Any, args: tuple, kwargs: dict, message: str) -> None:
    try:
        inspect.signature(fn).bind(*args, **kwargs)
    except TypeError as exc:
        raise RewardSpecError(f"{message} ({exc})") from None
    except ValueError:
        return
