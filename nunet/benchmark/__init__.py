"""Measured machine benchmarking (`nunet bench`): CPU, memory, disk, network and GPU figures from
the compiled kernels of `nunet._native.kernels`, stored in the node's store and read by matching.
See README.md. Import the submodules you need; this package imports nothing heavy by itself."""
