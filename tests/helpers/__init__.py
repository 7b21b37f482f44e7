"""Code the tests share: paths, CLI runners, model configs and batches, tiny data sets."""
