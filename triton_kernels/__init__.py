"""Triton kernels for TM-SGD (installed as tmsgd_kernels.triton_kernels)."""
