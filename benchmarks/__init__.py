"""Offline benchmarks for the bot: `python -m benchmarks` (add `--quick` for a short smoke run).

The bot runs as its own process (`python -m bot`, Socket Mode) against the loopback fakes in
`tests/fakes`, which run in the benchmark process; context assembly is measured in-process.
Nothing is written to disk except the optional `--json PATH` report.
"""
