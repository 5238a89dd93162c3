"""The C++ and CUDA sources, checked as text where no compiler or CUDA toolkit is needed.

- The op's C++ parameter list (csrc/step_signature.h), which every registered kernel of the op is
  declared from, is the schema tmsgd_kernels/step_contract.py generates: the same names and
  types, in the same order. The dispatcher checks the types when the schema is defined; the names
  and their order only this test does (two doubles swapped would go unnoticed otherwise).
- csrc/cuda_kernel.cu refuses, with a message that says what to do, a toolkit older than its
  kernels need (setup.py checks the same before it builds). The host compiler preprocesses the
  file with nvcc's version macros set by hand.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess

import pytest

from tmsgd_kernels.step_contract import StepScalars, schema

CSRC = os.path.join(os.path.dirname(__file__), "..", "csrc")
SOURCE = os.path.join(CSRC, "cuda_kernel.cu")
MESSAGE = "tmsgd_kernels needs CUDA 11.7 or newer"

# The C++ type of each schema type, as the dispatcher maps them for an unboxed kernel.
CPP_TYPES = {"Tensor[]": "at::TensorList", "float": "double", "int": "int64_t", "bool": "bool",
             "Tensor?": "const std::optional<at::Tensor>&"}


def _signature_header() -> str:
    with open(os.path.join(CSRC, "step_signature.h")) as file:
        return file.read()


def _schema_arguments() -> list[tuple[str, str]]:
    """(C++ type, name) of every argument of the generated schema, in order."""
    arguments = []
    for argument in schema().split(") -> ")[0].lstrip("(").split(", "):
        kind, name = argument.rsplit(" ", 1)
        arguments.append((CPP_TYPES[re.sub(r"\([a-z]!\)", "", kind)], name))
    return arguments


def test_cpp_parameter_list_is_the_schema() -> None:
    macro = re.search(r"#define TMSGD_STEP_PARAMETERS(.*?)\n\n", _signature_header(), re.S)[1]
    text = " ".join(macro.replace("\\", " ").split())
    parameters = []
    for parameter in text.split(","):
        kind, name = parameter.strip().rsplit(" ", 1)
        parameters.append((kind.replace(" &", "&").strip(), name))
    assert parameters == _schema_arguments()


def test_cpp_step_scalars_are_pythons_and_gathered_in_order() -> None:
    """C++ StepScalars has Python's fields in Python's order, and step_entry gathers the op's
    arguments into StepArguments in the schema's order (an aggregate takes them by position)."""
    header = _signature_header()
    struct = re.search(r"struct StepScalars \{(.*?)\};", header, re.S)[1]
    fields = re.findall(r"(\w+);", struct)
    assert fields == [field.name for field in dataclasses.fields(StepScalars)]
    gathered = re.search(r"kImplementation\(\{(.*?)\}\);", header, re.S)[1]
    assert re.findall(r"\w+", gathered) == [name for _, name in _schema_arguments()]


def _preprocess(*defines: str) -> subprocess.CompletedProcess:
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        pytest.skip("no C++ compiler")
    return subprocess.run([compiler, "-E", "-x", "c++", *defines, SOURCE], capture_output=True,
                          text=True)


def test_toolkit_older_than_11_7_is_refused() -> None:
    for major, minor in ((11, 6), (10, 2)):
        result = _preprocess(f"-D__CUDACC_VER_MAJOR__={major}", f"-D__CUDACC_VER_MINOR__={minor}")
        assert result.returncode != 0 and MESSAGE in result.stderr, (major, minor)


def test_supported_toolkits_pass_the_check() -> None:
    # Preprocessing goes on to the includes (absent here: no CUDA headers); the check is silent.
    for major, minor in ((11, 7), (12, 1), (13, 0)):
        result = _preprocess(f"-D__CUDACC_VER_MAJOR__={major}", f"-D__CUDACC_VER_MINOR__={minor}")
        assert MESSAGE not in result.stderr, (major, minor)


def test_host_compiler_alone_is_refused() -> None:
    """Without nvcc's macros the file is not being compiled by nvcc at all."""
    assert MESSAGE in _preprocess().stderr
