"""`evaluate` metric modules shipped with hf-finetune, so the core metrics load without the Hub.

Each sub-folder is a standard `evaluate` module (`evaluate.load(path)`), computed with scikit-learn,
reporting the same keys as the Hub metric of the same name. Precision, recall and F1 default to
macro averaging, which is defined for any number of classes.
"""
