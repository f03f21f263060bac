"""The Flower-facing side of a run: the strategy that wraps every aggregation rule, client
sampling, reply checks, the adapter transport, the server's behaviour probe, round checkpoints,
and a SuperNode's long-lived worker. Aggregation rules themselves (`fedsafe.aggregators`) never
see Flower types."""
