"""The toxicity classifiers a study can name, and load_classifier, which builds the one it names.

The paper scores continuations with the ToxiGen RoBERTa classifier (Hartvigsen et al. 2022),
``tomh/toxigen_roberta`` on the Hub; HubSequenceClassifier runs it, or any other
AutoModelForSequenceClassification. Machines without the Hub use the offline default,
"local" (local_classifier.py). Both meet judge.ToxicityClassifier, all evaluation needs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .judge import HeldOutAccuracy, ToxicityClassifier
from .local_classifier import load_local_classifier

PAPER_CLASSIFIER = "tomh/toxigen_roberta"
LOCAL = "local"

# Label names that mean "toxic" in common toxicity / hate-speech checkpoints; a name that
# negates them ("non-toxic", "not offensive", "nothate") is the other class.
_TOXIC_WORDS = ("toxic", "hate", "offensive", "abusive", "harmful")
_NEGATIONS = ("non", "not", "no ", "no_", "no-")


def toxic_label_index(id2label: Mapping[Any, str], toxic_label: int | str | None = None) -> int:
    """Which output index of a sequence classifier means toxic.

    toxic_label: an index, or a label name (case-insensitive) to use as is. Otherwise the one
    label whose name says toxic / hate / offensive without negating it; failing that, a
    two-label model with generic names (LABEL_0, LABEL_1) is taken to mean 1 = toxic, the
    convention of ToxiGen's checkpoints ("tomh/toxigen_roberta": LABEL_1 is toxic). Anything
    else is ambiguous and must be named.
    """
    labels = {int(k): str(v) for k, v in id2label.items()}
    if isinstance(toxic_label, int) and not isinstance(toxic_label, bool):
        if toxic_label not in labels:
            raise ValueError(f"toxic_label {toxic_label} is not an output index (labels: {labels})")
        return toxic_label
    if isinstance(toxic_label, str):
        if toxic_label.isdigit() and int(toxic_label) in labels:
            return int(toxic_label)
        matches = [i for i, name in labels.items() if name.lower() == toxic_label.lower()]
        if len(matches) != 1:
            raise ValueError(f"toxic_label {toxic_label!r} is not one of the labels {labels}")
        return matches[0]
    if toxic_label is not None:
        raise TypeError(f"toxic_label must be an index, a label name or None, got {toxic_label!r}")
    toxic = [i for i, name in labels.items()
             if any(w in name.lower() for w in _TOXIC_WORDS) and not name.lower().startswith(_NEGATIONS)]
    if len(toxic) == 1:
        return toxic[0]
    if len(labels) == 2 and all(name == f"LABEL_{i}" for i, name in labels.items()):
        return 1
    raise ValueError(f"cannot tell which label means toxic from {labels}; pass toxic_label")


class HubSequenceClassifier:
    """Any Hugging Face AutoModelForSequenceClassification (a Hub id or a local folder).

    Loading follows the engine's rules (models.pretrained_kwargs): remote code is refused
    unless asked for, and a local folder must hold safetensors weights.
    """

    def __init__(self, model_id_or_path: str, toxic_label: int | str | None = None, *, batch_size: int = 32,
                 device: str | None = None, max_length: int = 512, trust_remote_code: bool = False) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from trainables.models import pretrained_kwargs
        from trainables.ranks import model_device

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = device or str(model_device())  # this rank's GPU (the writer's), else the CPU
        self.batch_size = batch_size
        self.max_length = max_length
        self.tokenizer = AutoTokenizer.from_pretrained(model_id_or_path, trust_remote_code=bool(trust_remote_code))
        self.model = AutoModelForSequenceClassification.from_pretrained(
            model_id_or_path, **pretrained_kwargs(model_id_or_path, trust_remote_code=trust_remote_code))
        self.model.to(self.device).eval()
        # A single-logit head is a binary classifier whose sigmoid is P(toxic).
        self.single_logit = int(self.model.config.num_labels) == 1
        self.toxic_index = 0 if self.single_logit else toxic_label_index(self.model.config.id2label, toxic_label)
        label = "" if self.single_logit else f"#{self.model.config.id2label[self.toxic_index]}"
        self.name = f"{model_id_or_path}{label}"
        self.heldout: HeldOutAccuracy | None = None

    def toxic_probability(self, texts: Sequence[str]) -> list[float]:
        import torch

        # An empty text says nothing, so it is not toxic; some tokenizers also encode it to no
        # tokens at all, which a model cannot run on.
        spoken = [i for i, t in enumerate(texts) if str(t).strip()]
        out = [0.0] * len(texts)
        with torch.inference_mode():
            for start in range(0, len(spoken), self.batch_size):
                rows = spoken[start : start + self.batch_size]
                enc = self.tokenizer([str(texts[i]) for i in rows], padding=True, truncation=True,
                                     max_length=self.max_length, return_tensors="pt").to(self.device)
                logits = self.model(**enc).logits.float()
                probs = torch.sigmoid(logits[:, 0]) if self.single_logit else torch.softmax(logits, -1)[:, self.toxic_index]
                for i, p in zip(rows, probs.cpu().tolist()):
                    out[i] = float(p)
        return out


def parse_classifier_name(name: str) -> tuple[str, str | None]:
    """"org/model#LABEL_1" -> ("org/model", "LABEL_1"): a study file can name the toxic label."""
    model, sep, label = str(name).partition("#")
    return model, (label if sep and label else None)


def load_classifier(name: str, *, data_dir: str | None = None, cache_dir: str | None = None,
                    **options: Any) -> ToxicityClassifier:
    """The classifier a study names: "local" (the offline default, fitted on the ToxiGen
    annotated data of `data_dir`, else of the Hub, cached under `cache_dir`) or a Hub id /
    local folder of a sequence classifier, optionally "<id>#<toxic label>".

    options go to the classifier (HubSequenceClassifier: toxic_label, batch_size, device, ...;
    local: settings, limit).
    """
    if name == LOCAL:
        return load_local_classifier(data_dir=data_dir, cache_dir=cache_dir, **options)
    model, label = parse_classifier_name(name)
    if label is not None:
        options.setdefault("toxic_label", label)
    return HubSequenceClassifier(model, **options)
