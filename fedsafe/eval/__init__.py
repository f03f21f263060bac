"""Evaluation: judges, safety and helpfulness metrics, reports and plots."""
