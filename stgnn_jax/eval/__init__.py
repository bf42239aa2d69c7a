"""Evaluation: metrics (scikit-learn), the classical baselines fitted on the same folds, and the
reports of a run."""
