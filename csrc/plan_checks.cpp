// The optimizer's per-step checks that its plan still fits (tmsgd_kernels/step_plan.py), as
// loops over borrowed pointers. In Python they cost about 80 us per step for 161 params on the
// project's 2-core CPU machine (the state walk 50 us, params' addresses and dtypes 21 us, the
// gradients' layouts 10 us), more than half of a whole fused SGD step.
#include <Python.h>
#include <torch/csrc/autograd/python_variable.h>

#include <algorithm>
#include <cstdint>

namespace tmsgd {

namespace {

uint64_t mix(uint64_t hash, uint64_t value) {
  // FNV-1a style: one xor and one multiply per 64-bit value.
  return (hash ^ value) * 0x100000001b3ULL;
}

}  // namespace

// layout_fingerprint(tensors) -> int: a hash of every tensor's address, dtype, device, sizes and
// strides, in order. Assigning `p.data` keeps the Python object but changes what this sees.
PyObject* layout_fingerprint(PyObject*, PyObject* tensors) {
  if (!PyList_Check(tensors)) {
    PyErr_SetString(PyExc_TypeError, "layout_fingerprint takes a list of tensors");
    return nullptr;
  }
  uint64_t hash = 0xcbf29ce484222325ULL;
  for (Py_ssize_t i = 0; i < PyList_GET_SIZE(tensors); ++i) {
    PyObject* item = PyList_GET_ITEM(tensors, i);
    if (!THPVariable_Check(item)) {
      PyErr_SetString(PyExc_TypeError, "layout_fingerprint takes a list of tensors");
      return nullptr;
    }
    const at::Tensor& tensor = THPVariable_Unpack(item);
    hash = mix(hash, reinterpret_cast<uintptr_t>(tensor.data_ptr()));
    hash = mix(hash, static_cast<uint64_t>(tensor.scalar_type()));
    hash = mix(hash, (static_cast<uint64_t>(tensor.device().type()) << 8) |
                         static_cast<uint8_t>(tensor.device().index()));
    hash = mix(hash, static_cast<uint64_t>(tensor.dim()));
    for (int64_t d = 0; d < tensor.dim(); ++d) {
      hash = mix(hash, static_cast<uint64_t>(tensor.size(d)));
      hash = mix(hash, static_cast<uint64_t>(tensor.stride(d)));
    }
  }
  return PyLong_FromUnsignedLongLong(hash);
}

// first_mismatched_grad(params, grads) -> int: the index of the first gradient that is not
// strided or differs from its param in dtype, sizes or device, else -1. Runs every step, before
// any run of tensors is stepped, so that a gradient replaced between steps is refused before
// anything changes.
PyObject* first_mismatched_grad(PyObject*, PyObject* args) {
  PyObject *params, *grads;
  if (!PyArg_ParseTuple(args, "O!O!", &PyList_Type, &params, &PyList_Type, &grads)) {
    return nullptr;
  }
  const Py_ssize_t n = std::min(PyList_GET_SIZE(params), PyList_GET_SIZE(grads));
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyObject* param_object = PyList_GET_ITEM(params, i);
    PyObject* grad_object = PyList_GET_ITEM(grads, i);
    if (!THPVariable_Check(param_object) || !THPVariable_Check(grad_object)) {
      return PyLong_FromSsize_t(i);
    }
    const at::Tensor& param = THPVariable_Unpack(param_object);
    const at::Tensor& grad = THPVariable_Unpack(grad_object);
    if (grad.layout() != c10::kStrided || grad.scalar_type() != param.scalar_type() ||
        grad.device() != param.device() || grad.sizes() != param.sizes()) {
      return PyLong_FromSsize_t(i);
    }
  }
  return PyLong_FromLong(-1);
}

// same_state_objects(state, params, ids) -> bool. `state`: a dict (the optimizer's state, keyed
// by param); `params`: a list; `ids`: a tuple of ints, the ids of the values of each param's state
// dict, params in order, values in dict order.
PyObject* same_state_objects(PyObject*, PyObject* args) {
  PyObject *state, *params, *ids;
  if (!PyArg_ParseTuple(args, "O!O!O!", &PyDict_Type, &state, &PyList_Type, &params,
                        &PyTuple_Type, &ids)) {
    return nullptr;
  }
  const Py_ssize_t expected = PyTuple_GET_SIZE(ids);
  Py_ssize_t next = 0;
  for (Py_ssize_t i = 0; i < PyList_GET_SIZE(params); ++i) {
    PyObject* entry = PyDict_GetItemWithError(state, PyList_GET_ITEM(params, i));  // borrowed
    if (entry == nullptr) {
      if (PyErr_Occurred()) {
        return nullptr;
      }
      Py_RETURN_FALSE;
    }
    if (!PyDict_Check(entry)) {
      Py_RETURN_FALSE;
    }
    Py_ssize_t position = 0;
    PyObject *key, *value;
    while (PyDict_Next(entry, &position, &key, &value)) {
      if (next == expected ||
          PyLong_AsVoidPtr(PyTuple_GET_ITEM(ids, next)) != static_cast<void*>(value)) {
        if (PyErr_Occurred()) {
          return nullptr;
        }
        Py_RETURN_FALSE;
      }
      ++next;
    }
  }
  if (next != expected) {
    Py_RETURN_FALSE;
  }
  Py_RETURN_TRUE;
}

}  // namespace tmsgd
