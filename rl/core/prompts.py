"""CoT templates (cot_templates/*.yaml) and prompt building.

A template is data: name, title, when to use it, ordered steps and a worked
example. Prompts are chat messages asking for the R1-T1 output format; the
assistant turn may be prefilled with ``<think>`` so the policy starts reasoning
at once. Template choice per example is fixed, uniform or weighted, drawn from
a seeded RNG keyed by the example id so a run is reproducible.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rl.core.parsing import THINK_OPEN
from rl.core.errors import UserError

TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "cot_templates"
TEMPLATE_NAMES = (
    "hierarchical",
    "triangulating",
    "back_translation",
    "context_aware",
    "explanation",
    "structural",
)
DEFAULT_SYSTEM_PROMPT = (
    "You are a translator who thinks before answering. First reason about the translation "
    "inside <think> </think>, then give only the final translation inside <answer> </answer>."
)


class TemplateError(UserError, ValueError):
    """A CoT template file is missing, malformed, or a template name is unknown."""


@dataclass(frozen=True)
class CotTemplate:
    name: str
    title: str
    when_to_use: str
    steps: tuple[str, ...]
    example: dict[str, str]
    pivot_language: str | None = None
    # optional: the words that most tell this template's reasoning apart (its step labels);
    # rl.core.analytics.CotLabeler weighs them above the prose of title, steps and example
    keywords: tuple[str, ...] = ()


def load_template(path: str | Path) -> CotTemplate:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise TemplateError(f"{path}: cannot read template: {exc}") from exc
    if not isinstance(raw, dict):
        raise TemplateError(f"{path}: a template must be a mapping")
    required = {"name": str, "title": str, "when_to_use": str, "steps": list, "example": dict}
    for key, kind in required.items():
        if not isinstance(raw.get(key), kind) or not raw[key]:
            raise TemplateError(f"{path}: field '{key}' must be a non-empty {kind.__name__}")
    unknown = set(raw) - set(required) - {"pivot_language", "keywords"}
    if unknown:
        raise TemplateError(f"{path}: unknown field(s) {sorted(unknown)}")
    if not all(isinstance(s, str) and s.strip() for s in raw["steps"]):
        raise TemplateError(f"{path}: every entry of 'steps' must be a non-empty string")
    keywords = raw.get("keywords", [])
    if not isinstance(keywords, list) or not all(isinstance(k, str) and k.strip() for k in keywords):
        raise TemplateError(f"{path}: 'keywords' must be a list of non-empty strings")
    for key in ("source_lang", "target_lang", "source", "think", "answer"):
        if not isinstance(raw["example"].get(key), str):
            raise TemplateError(f"{path}: example.{key} must be a string")
    return CotTemplate(
        name=raw["name"],
        title=raw["title"],
        when_to_use=" ".join(raw["when_to_use"].split()),
        steps=tuple(raw["steps"]),
        example={k: " ".join(str(v).split()) for k, v in raw["example"].items()},
        pivot_language=raw.get("pivot_language"),
        keywords=tuple(keywords),
    )


def load_templates(directory: str | Path | None = None) -> dict[str, CotTemplate]:
    """All templates in ``directory`` keyed by name (the shipped six by default)."""
    directory = Path(directory) if directory else TEMPLATES_DIR
    files = sorted(directory.glob("*.yaml"))
    if not files:
        raise TemplateError(f"no *.yaml templates in {directory}")
    templates: dict[str, CotTemplate] = {}
    for file in files:
        template = load_template(file)
        if template.name in templates:
            raise TemplateError(f"{file}: duplicate template name '{template.name}'")
        templates[template.name] = template
    return templates


def choose_template(
    example_id: str,
    templates: dict[str, CotTemplate],
    choice: str = "uniform",
    fixed: str | None = None,
    weights: dict[str, float] | None = None,
    seed: int = 0,
) -> CotTemplate | None:
    """Pick the template for one example, reproducibly (seeded by the example id)."""
    if choice == "none":
        return None
    if choice == "fixed":
        if fixed not in templates:
            raise TemplateError(f"prompt.template '{fixed}' is not one of {sorted(templates)}")
        return templates[fixed]
    names = sorted(templates)
    rng = random.Random(int(hashlib.sha256(f"{seed}:{example_id}".encode()).hexdigest()[:16], 16))
    if choice == "uniform":
        return templates[rng.choice(names)]
    if choice == "weighted":
        weights = weights or {}
        unknown = set(weights) - set(templates)
        if unknown:
            raise TemplateError(f"prompt.template_weights: unknown template(s) {sorted(unknown)}")
        if not any(w > 0 for w in weights.values()):
            raise TemplateError("prompt.template_weights needs at least one positive weight")
        return templates[rng.choices(names, weights=[weights.get(n, 0.0) for n in names])[0]]
    raise TemplateError(f"unknown template choice '{choice}' (fixed, uniform, weighted, none)")


def build_messages(
    source: str,
    src_name: str,
    tgt_name: str,
    template: CotTemplate | None = None,
    context: str | None = None,
    system_prompt: str | None = None,
) -> list[dict[str, str]]:
    """Chat messages asking for a reasoned translation in the R1-T1 format."""
    lines = [f"Translate the following {src_name} text into {tgt_name}."]
    if template is not None:
        steps = " ".join(f"({i}) {step}" for i, step in enumerate(template.steps, 1))
        lines.append(f"Reason with {template.title.lower()}: {steps}")
        if template.pivot_language:
            lines.append(f"Pivot language: {template.pivot_language}.")
    if context:
        lines.append(f"Context: {context}")
    lines.append(f"{src_name}: {source}")
    return [
        {"role": "system", "content": system_prompt or DEFAULT_SYSTEM_PROMPT},
        {"role": "user", "content": "\n".join(lines)},
    ]


def render_prompt(tokenizer: Any, messages: list[dict[str, str]], think_prefill: bool = True) -> str:
    """The prompt text the engine continues: chat template + optional ``<think>`` prefill."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return text + THINK_OPEN if think_prefill else text


def render_completion(think: str, answer: str, think_prefill: bool = True) -> str:
    """The assistant text for SFT targets; without the prefilled ``<think>`` when prefill is on."""
    full = f"<think>{think}</think><answer>{answer}</answer>"
    return full[len(THINK_OPEN):] if think_prefill else full


def full_completion(generated: str, think_prefill: bool = True) -> str:
    """Re-attach the prefilled ``<think>`` so the parser sees the whole R1-T1 form."""
    return THINK_OPEN + generated if think_prefill else generated


def uses_prefill(prompt_cfg) -> bool:
    """Whether prompts end with ``<think>`` (never for direct prompts)."""
    return prompt_cfg.style == "cot" and prompt_cfg.think_prefill


def direct_messages(source: str, src_name: str, tgt_name: str, system_prompt: str | None = None) -> list[dict[str, str]]:
    """A plain translation request (prompt.style=direct): no tags, no template, no context.
    The system turn appears only when the config sets one (the default one names the tags)."""
    user = {"role": "user", "content": f"Translate the following {src_name} text into {tgt_name}.\n{src_name}: {source}"}
    return [{"role": "system", "content": system_prompt}, user] if system_prompt else [user]


def prompt_for_example(example, tokenizer: Any, prompt_cfg, templates: dict[str, CotTemplate], seed: int = 0):
    """(prompt text, template name or None) for one rl.core.data.Example, as training,
    SFT and evaluation all build it."""
    from rl.core.languages import resolve_language

    if prompt_cfg.style == "direct":
        messages = direct_messages(example.source, resolve_language(example.src_lang).name,
                                   resolve_language(example.tgt_lang).name, prompt_cfg.system_prompt)
        return render_prompt(tokenizer, messages, think_prefill=False), None
    template = choose_template(
        example.id, templates, prompt_cfg.template_choice, prompt_cfg.template, prompt_cfg.template_weights, seed
    )
    messages = build_messages(
        example.source,
        resolve_language(example.src_lang).name,
        resolve_language(example.tgt_lang).name,
        template,
        context=example.context if template is not None and template.name == "context_aware" else None,
        system_prompt=prompt_cfg.system_prompt,
    )
    return render_prompt(tokenizer, messages, prompt_cfg.think_prefill), (template.name if template else None)
