"""fedsafe: safety attacks and defenses for federated instruction tuning."""
