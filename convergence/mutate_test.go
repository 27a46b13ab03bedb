//go:build mutate

package convergence

// Under the mutate build tag (make mutate), the simulations run a small
// fixed subset: a few seeds, no 32- and 64-host runs. Every mutant is
// tested against the whole deterministic suite (machine, table, operator
// and asymmetric-link tests) plus this subset, in seconds instead of
// minutes.
func init() { mutateSubset = true }
