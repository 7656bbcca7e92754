"""What the teacher is asked: one template in full, the source, the target language and, by
choice, the reference; and which template each pair gets (round-robin per direction, so the
data is balanced over templates whatever the mix of directions)."""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from rl.core.config import Config, ConfigError
from rl.core.data import Example
from rl.core.languages import resolve_language
from rl.core.prompts import (
    DEFAULT_SYSTEM_PROMPT, CotTemplate, load_templates, prompt_for_example, render_prompt,
)


def synth_templates(cfg: Config) -> dict[str, CotTemplate]:
    """The templates synthesis cycles through: synth.templates (names) or every one in prompt.templates_dir."""
    templates = load_templates(cfg.prompt.templates_dir)
    names = cfg.synth.templates or sorted(templates)
    unknown = [n for n in names if n not in templates]
    if unknown:
        raise ConfigError(f"synth.templates: unknown template(s) {unknown}; known: {sorted(templates)}")
    return {n: templates[n] for n in names}


def assign_templates(examples: list[Example], names: list[str]) -> list[str]:
    """Round-robin per direction, in data order: the i-th pair of a direction gets names[i % len].
    Deterministic, so a resumed run gives every pair the template it had."""
    seen: dict[tuple[str, str], int] = {}
    out = []
    for ex in examples:
        key = (ex.src_lang, ex.tgt_lang)
        i = seen.get(key, 0)
        seen[key] = i + 1
        out.append(names[i % len(names)])
    return out


def teacher_messages(ex: Example, template: CotTemplate, show_reference: bool,
                     system_prompt: str | None = None) -> list[dict[str, str]]:
    """The template in full (title, when to use it, its steps, its worked example in the R1-T1
    format), then the pair; the reference only when asked for (the teacher reasons towards it)."""
    src, tgt = resolve_language(ex.src_lang).name, resolve_language(ex.tgt_lang).name
    example = template.example
    steps = "\n".join(f"{i}. {step}" for i, step in enumerate(template.steps, 1))
    lines = [
        f"Translate the following {src} text into {tgt}, reasoning with the method \"{template.title}\".",
        f"When to use it: {template.when_to_use}",
        f"Steps:\n{steps}",
    ]
    if template.pivot_language:
        lines.append(f"Pivot language: {template.pivot_language}.")
    lines.append(f"Worked example ({example['source_lang']} to {example['target_lang']}):\n"
                 f"{example['source_lang']}: {example['source']}\n"
                 f"<think>{example['think']}</think><answer>{example['answer']}</answer>")
    if ex.context and template.name == "context_aware":
        lines.append(f"Context (the previous sentence): {ex.context}")
    if show_reference and ex.reference:
        lines.append(f"A reference {tgt} translation, to check your reasoning against (do not mention it): "
                     f"{ex.reference}")
    lines.append(f"Follow the steps inside <think> </think>, then give only the {tgt} translation inside "
                 f"<answer> </answer>.\n{src}: {ex.source}")
    return [{"role": "system", "content": system_prompt or DEFAULT_SYSTEM_PROMPT},
            {"role": "user", "content": "\n\n".join(lines)}]


def teacher_prompt(cfg: Config, tokenizer: Any, ex: Example, template: CotTemplate,
                   templates: dict[str, CotTemplate]) -> str:
    """The chat-templated prompt for one pair. synth.prompt=student asks exactly as SFT and GRPO
    ask the student (rl.core.prompts.prompt_for_example, this template fixed unless the prompt
    section names none): for a teacher that was itself trained on those prompts (the toy world's)."""
    if cfg.synth.prompt == "student":
        prompt_cfg = cfg.prompt if cfg.prompt.template_choice == "none" else replace(
            cfg.prompt, template_choice="fixed", template=template.name)
        return prompt_for_example(ex, tokenizer, replace(prompt_cfg, style="cot"), templates, cfg.seed)[0]
    messages = teacher_messages(ex, template, cfg.synth.show_reference, cfg.prompt.system_prompt)
    return render_prompt(tokenizer, messages, cfg.prompt.think_prefill)
