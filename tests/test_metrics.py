"""Utility metrics: ROUGE-1 (SAMSum, SQL) and GSM8k exact match, on hand-checked examples."""

import pytest

from deepalign_jax.metrics import gsm8k_accuracy, gsm8k_answer, gsm8k_correct, normalize_number, rouge1, rouge1_example

# Hand-computed: rouge-score lower-cases, keeps [a-z0-9] runs, Porter-stems, and
# counts clipped unigram overlaps.  P = overlap / prediction tokens, R = overlap /
# reference tokens, F1 = 2PR / (P + R).
ROUGE_CASES = [
  # prediction: the cat are sit | reference: a cat sat on the mat  → overlap {the, cat} = 2
  ("the cats are sitting", "a cat sat on the mat", 2 / 4, 2 / 6, 0.4),
  # amanda bake cooki | amanda bake cooki and will bring jerri some tomorrow → 3 of 3, 3 of 9
  ("Amanda baked cookies.", "Amanda baked cookies and will bring Jerry some tomorrow.", 1.0, 1 / 3, 0.5),
  # "the" three times matches the reference's one "the" once
  ("the the the", "the cat", 1 / 3, 1 / 2, 0.4),
  # SQL: select count from head | select count from head where age 56  ("(*)" and ">" are dropped)
  ("SELECT COUNT(*) FROM head", "SELECT count(*) FROM head WHERE age > 56", 1.0, 4 / 7, 8 / 11),
  ("", "anything at all", 0.0, 0.0, 0.0),
]


@pytest.mark.parametrize("prediction,reference,precision,recall,f1", ROUGE_CASES)
def test_rouge1_example(prediction, reference, precision, recall, f1):
  assert rouge1_example(prediction, reference) == pytest.approx((precision, recall, f1))


def test_rouge1_means_over_examples():
  preds, refs = [c[0] for c in ROUGE_CASES[:2]], [c[1] for c in ROUGE_CASES[:2]]
  out = rouge1(preds, refs)
  assert out == pytest.approx(
    {"rouge1_f1": (0.4 + 0.5) / 2, "rouge1_precision": (0.5 + 1.0) / 2, "rouge1_recall": (1 / 3 + 1 / 3) / 2, "n": 2}
  )
  # Precision is over the prediction: swapping the arguments swaps P and R.
  swapped = rouge1(refs, preds)
  assert swapped["rouge1_precision"] == pytest.approx(out["rouge1_recall"])
  same = rouge1(["SELECT name FROM head WHERE age > 56"], ["select name from head where age > 56"])
  assert same["rouge1_f1"] == 1.0


def test_rouge1_input_errors():
  with pytest.raises(ValueError, match="2 predictions for 1 references"):
    rouge1(["a", "b"], ["a"])
  with pytest.raises(ValueError, match="no examples"):
    rouge1([], [])
  with pytest.raises(TypeError, match="prediction 1 must be a string"):
    rouge1(["a", None], ["a", "b"])
  with pytest.raises(TypeError, match="not a single string"):
    rouge1("abc", "abc")


@pytest.mark.parametrize(
  "text,number",
  [
    ("1,000", "1000"),
    ("18.0", "18"),
    ("18.", "18"),
    ("18.00", "18"),
    ("0.50", "0.5"),
    ("-3", "-3"),
    ("100", "100"),
    ("0.0", "0"),
  ],
)
def test_normalize_number(text, number):
  assert normalize_number(text) == number


REFERENCE = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nShe sold 48+24 = <<48+24=72>>72 clips.\n#### 72"


@pytest.mark.parametrize(
  "prediction,correct",
  [
    ("She sold 72 clips altogether.\n#### 72", True),
    ("#### 72.0", True),
    ("The answer: #### 72.", True),
    ("#### 71", False),
    ("She sold 72 clips.", False),  # no "####": wrong
    ("#### 72 ... or rather #### 70", True),  # the first "####" counts, as in the reference
    ("#### 720", False),
  ],
)
def test_gsm8k_correct(prediction, correct):
  assert gsm8k_correct(prediction, REFERENCE) is correct


def test_gsm8k_commas_and_accuracy():
  assert gsm8k_correct("#### 1,250", "so 1250 in total\n#### 1250")
  assert gsm8k_answer("no answer here") is None
  out = gsm8k_accuracy(
    ["#### 72", "I think 72.", "#### 5", "#### 1,000"], [REFERENCE, REFERENCE, "#### 6", "#### 1000.0"]
  )
  assert out == {"accuracy": 0.5, "n": 4, "n_correct": 2, "n_no_answer": 1}
  with pytest.raises(ValueError, match="reference 1: the GSM8k reference has no '#### N'"):
    gsm8k_accuracy(["#### 1", "#### 2"], ["#### 1", "two"])
