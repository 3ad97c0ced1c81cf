"""Toxicity classifiers: what judges a generation toxic in the safe % evaluation (Table 6).

- judge.py: the ToxicityClassifier protocol (what evaluation needs of a classifier) and
  HeldOutAccuracy (how far a classifier agrees with human labels).
- classifier.py: a Hugging Face sequence classifier (the paper's ToxiGen RoBERTa,
  "tomh/toxigen_roberta") and load_classifier, the factory for every classifier a study names.
- local_classifier.py: the offline default, TF-IDF + logistic regression fitted on ToxiGen's
  human-annotated statements and cached as JSON / npz (never pickle).
- (the safe % evaluation itself, greedy continuations judged into evals / predictions rows, is
  trainables/evaluation/safety.py)

Nothing heavy is imported here: torch, transformers and scikit-learn load on first use.
"""
