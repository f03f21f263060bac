"""The post-hoc defense of arXiv 2406.10630: the server builds defense data and fine-tunes the
global adapter (`defense.py`); `branch.py` redoes it on a finished run (`fedsafe posthoc`)."""
