"""Benchmarks that print what anytime costs relative to plain PyTorch; run as ``python -m bench.<script>``."""
