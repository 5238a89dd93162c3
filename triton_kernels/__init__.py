"""Triton kernels for TM-SGD, installed as tmsgd_kernels.triton_kernels.

Importing this package needs no Triton: the kernels live in submodules that import it, loaded
only once the package has checked that Triton can run (tmsgd_kernels/ops.py then registers
`op.tmsgd_step_triton`). Of the package above, only its contract module
(tmsgd_kernels/step_contract.py: the lists' names, StepScalars) is imported here.

Layout, one idea per file:
    op.py               the implementation of the op tmsgd_kernels::tmsgd_step_triton: where the
                        counts live picks the host or the device path
    tensor_lists.py     the op's lists, moved together
    tensor_checks.py    the checks that run before anything changes
    layout.py           flat ranges or a pointer table for a call's tensors, cached by their
                        addresses, shapes, strides and dtypes
    pointer_table.py    the table: per-tensor addresses and numel, block -> tensor map
    kernel_scalars.py   the step's scalars (StepScalars) as kernel arguments and flags
    element_update.py   the per-element TM-SGD step of one block (@triton.jit helpers)
    int8_blocks.py      where an 8-bit history's blocks of 256 lie (host side)
    quantized_update.py the step of whole blocks with an 8-bit history: decode, update, encode
    step_kernel.py      the step kernel, and its launches over one range per list (flattened
                        buffers) or any list of tensors through the pointer table
    count_kernel.py     the launch that advances counts kept on the device
    launch_rule.py      block size and warps (a rule, no autotuner: the step is in place)
"""
