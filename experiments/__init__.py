"""Studies of what the optimizers do: convergence of TM-SGD against its peers, and the
self-adaptive auxiliary-variable loss. Run from the checkout, e.g.
`python -m experiments.convergence`."""
