"""Benchmarks (needs torch for the baselines it builds): `timing` (the schedule and the oracle),
`latency` (a pruned artifact against an unpruned one, batch 1), `suite` (`tokprune-bench`)."""
