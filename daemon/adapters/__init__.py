"""The imperative shell: the only modules that touch files, the network, NVML or the clock."""
