"""Modal-adaptive structured pruning of EfficientVLM (`minivlm prune`): hard-concrete gates over every attention
head and feed-forward neuron (`gates`, `units`), one global expected-sparsity target held by a Lagrangian
(`sparsity`), fine-tuning with distillation from the unpruned model (`objective`, `run`), then physical removal of
what the gates zero (`physical`) and a report of what was kept (`report`). docs/PRUNING.md walks through it."""
