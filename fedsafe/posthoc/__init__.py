"""The post-hoc defense of arXiv 2406.10630: the server builds defense data (`data.py`: curated,
L1, L2, L3) and fine-tunes the global adapter (`finetune.py`); `branch.py` redoes it on a
finished run (`fedsafe posthoc`)."""
