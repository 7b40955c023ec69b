"""Benchmarks of the course's training step and evaluation path, on a GPU
(the 2B model) or a CPU (the tiny one).

Run from the repository root: `python -m benchmarks.gpu_train_step --help`,
`python -m benchmarks.gpu_generate --help`. The figures they print go into
book/costs.md ("What it costs").
"""
