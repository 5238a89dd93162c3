"""Studies of what the optimizers do: convergence of TM-SGD against its peers, and the
self-adaptive auxiliary-variable loss. Run from the checkout, e.g.
`python -m experiments.convergence`. `experiments.stats` holds the paired statistics (tests,
bootstrap interval, Holm's correction, power) that the studies share."""
