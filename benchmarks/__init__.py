"""Developer benchmarks of a source checkout (not installed with lcpipe); see benchmarks/README.md."""
