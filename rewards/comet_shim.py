"""The smallest patch that lets unbabel-comet 2.2.7 run beside transformers 5.

unbabel-comet pins ``transformers<5`` and is installed with ``--no-deps``
(rl/setup_env.py). Two things it relies on changed in transformers 5; both are
patched here and nothing else:

1. ``XLMREncoder.forward`` unpacks ``self.model(..., return_dict=False)`` into
   three values (last hidden state, pooler output, hidden states). COMET builds
   XLM-R without a pooling layer, and transformers 5 drops the missing pooler
   from the tuple, so only two come back and the unpacking fails. The patched
   forward asks for ``return_dict=True`` and reads the fields by name, which is
   correct under transformers 4 and 5 alike. (XLMRXLEncoder, for XCOMET,
   inherits this forward.)
2. Fast tokenizers lost ``build_inputs_with_special_tokens``. COMET's
   ``Encoder.concat_sequences`` calls it to join ``mt</s></s>src`` for
   UnifiedMetric models (CometKiwi, XCOMET). The patched ``__init__`` gives the
   encoder's tokenizer that method back, in XLM-R's pair format
   ``<s> A </s></s> B </s>``, only when the tokenizer lacks it.

``apply()`` is idempotent; :mod:`rewards.comet` calls it before it loads or builds a COMET model
(not at import, so finding a checkpoint, as the dry run does, imports no torch).
"""
from __future__ import annotations

import types

_APPLIED = False
ORIGINAL: dict[str, object] = {}  # what was replaced, for tests that show each patch is still needed


def apply() -> None:
    global _APPLIED
    if _APPLIED:
        return
    from comet.encoders.xlmr import XLMREncoder
    from comet.encoders.xlmr_xl import XLMRXLEncoder

    ORIGINAL["XLMREncoder.forward"] = XLMREncoder.forward
    XLMREncoder.forward = _xlmr_forward
    for cls in (XLMREncoder, XLMRXLEncoder):
        ORIGINAL[f"{cls.__name__}.__init__"] = cls.__init__
        cls.__init__ = _with_pair_builder(cls.__init__)
    _APPLIED = True


def _xlmr_forward(self, input_ids, attention_mask, **kwargs):
    out = self.model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        output_hidden_states=True,
        return_dict=True,  # patch 1: named fields instead of a tuple whose length changed
    )
    last = out.last_hidden_state
    return {"sentemb": last[:, 0, :], "wordemb": last, "all_layers": out.hidden_states, "attention_mask": attention_mask}


def _with_pair_builder(init):
    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        tok = self.tokenizer
        if not hasattr(tok, "build_inputs_with_special_tokens"):  # patch 2
            tok.build_inputs_with_special_tokens = types.MethodType(_xlmr_pair, tok)

    __init__.__wrapped__ = init
    return __init__


def _xlmr_pair(tok, ids_0: list[int], ids_1: list[int] | None = None) -> list[int]:
    """What transformers 4's XLMRobertaTokenizerFast did: ``<s> A </s>`` or ``<s> A </s></s> B </s>``."""
    cls, sep = [tok.cls_token_id], [tok.sep_token_id]
    if ids_1 is None:
        return cls + list(ids_0) + sep
    return cls + list(ids_0) + sep + sep + list(ids_1) + sep
