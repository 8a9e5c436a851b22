"""Hyperparameter sweeps over train jobs, on Optuna: `spec` (the request, checked), `study` (the
sweep's Optuna study: storage, sampler, pruner), `driver` (who asks the sampler and makes trial
jobs), `pruning` (how a trial's worker reports its objective and learns to stop)."""
