"""From the map to a faster model: pruning plans derived from measured routes, the pruned forward pass that really
computes less, its FLOP count, and its evaluation against FastV-style token pruning."""
