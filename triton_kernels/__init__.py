"""Triton kernels for TM-SGD, installed as tmsgd_kernels.triton_kernels.

Importing this package needs no Triton: the kernels live in submodules that import it, loaded
only by `tmsgd_kernels.backends.triton_backend` once it has checked that Triton can run.

Layout, one idea per file:
    element_update.py  the per-element TM-SGD step of one block (a @triton.jit helper)
    flat_kernel.py     one contiguous range: kernel and launch helper
    table_kernel.py    a list of tensors through a pointer/size table: kernel and launch helper
    pointer_table.py   builds that table on the device and caches it while the tensors stay put
    step_count.py      the tiny kernel that advances the step counter after the update
    launch_rule.py     block size and warps (a rule, no autotuner: the step is in place)
    step_args.py       the scalar arguments and constexpr flags every update launch shares
    op.py              the torch.library custom op `tmsgd_triton::step_bucket` tying them together
"""
