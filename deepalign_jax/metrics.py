"""Utility metrics of the benign fine-tuning tasks (SPEC §6).

SAMSum, SQL Create Context: ROUGE-1 (rouge-score, Porter stemmer) — F1,
  precision and recall, each the mean over examples, as the reference's
  `RougeEvaluator.rouge_1(ground_truth, generation)` scores one example.
GSM8k: exact match of the number after "####" in the model's answer and in
  the reference answer (`gsm8k_final_answer`), commas removed; we also
  equate "18", "18.0" and "18." so a formatting difference is not an error.
"""

from __future__ import annotations

from typing import Sequence

from deepalign_jax.data.formats import gsm8k_final_answer


def _check_pairs(predictions: Sequence[str], references: Sequence[str]) -> None:
  if isinstance(predictions, str) or isinstance(references, str):
    raise TypeError("predictions and references must be sequences of strings, not a single string")
  if len(predictions) != len(references):
    raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
  if not predictions:
    raise ValueError("no examples to score")
  for name, texts in (("prediction", predictions), ("reference", references)):
    for i, text in enumerate(texts):
      if not isinstance(text, str):
        raise TypeError(f"{name} {i} must be a string, got {type(text).__name__}")


_SCORER = None


def _rouge1_scorer():
  global _SCORER
  if _SCORER is None:
    from rouge_score import rouge_scorer

    _SCORER = rouge_scorer.RougeScorer(["rouge1"], use_stemmer=True)
  return _SCORER


def rouge1_example(prediction: str, reference: str) -> tuple[float, float, float]:
  """(precision, recall, f1) of unigram overlap between `prediction` and `reference`.

  Precision is over the prediction's tokens, recall over the reference's.
  """
  score = _rouge1_scorer().score(reference, prediction)["rouge1"]
  return score.precision, score.recall, score.fmeasure


def rouge1(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
  """Mean ROUGE-1 over examples: {'rouge1_f1', 'rouge1_precision', 'rouge1_recall', 'n'}."""
  _check_pairs(predictions, references)
  scores = [rouge1_example(p, r) for p, r in zip(predictions, references)]
  n = len(scores)
  return {
    "rouge1_f1": sum(s[2] for s in scores) / n,
    "rouge1_precision": sum(s[0] for s in scores) / n,
    "rouge1_recall": sum(s[1] for s in scores) / n,
    "n": n,
  }


def normalize_number(text: str) -> str:
  """A number as GSM8k answers are compared: no commas, no trailing '.', '.0' or '.00'.

  "1,000" → "1000", "18.0" → "18", "18." → "18", "0.50" → "0.5", "-3" → "-3".
  """
  original = text.strip()
  text = original.replace(",", "")
  if "." in text:
    text = text.rstrip("0").rstrip(".")
  # Punctuation with no digits ("#### ." matches the pattern) stays as it was.
  return text if any(c.isdigit() for c in text) else original


def gsm8k_answer(text: str) -> str | None:
  """The normalised number after "####" in `text`, or None when there is none."""
  found = gsm8k_final_answer(text)
  return normalize_number(found) if found is not None else None


def gsm8k_correct(prediction: str, reference: str) -> bool:
  """Whether the prediction's "####" number equals the reference's.

  A prediction without "#### N" is wrong; a reference without one is an error.
  """
  gold = gsm8k_answer(reference)
  if gold is None:
    raise ValueError(f"the GSM8k reference has no '#### N' answer: {reference[-80:]!r}")
  return gsm8k_answer(prediction) == gold


def gsm8k_accuracy(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
  """{'accuracy', 'n', 'n_correct', 'n_no_answer'} over examples.

  n_no_answer counts predictions without a "#### N" (scored wrong), which
  tells a formatting failure from a wrong sum.
  """
  _check_pairs(predictions, references)
  correct = 0
  for i, (prediction, reference) in enumerate(zip(predictions, references)):
    try:
      correct += gsm8k_correct(prediction, reference)
    except ValueError as e:
      raise ValueError(f"reference {i}: {e}") from None
  no_answer = sum(gsm8k_answer(p) is None for p in predictions)
  return {"accuracy": correct / len(predictions), "n": len(predictions), "n_correct": correct, "n_no_answer": no_answer}
