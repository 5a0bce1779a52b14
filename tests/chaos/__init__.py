"""Jepsen-style chaos testing of the distributed deployment: a steady order
load with idempotency keys and retries (workload), faults injected into every
process and engine (nemesis), and a checker that judges the outcome from the
public API and the engines' own data only (checker)."""
