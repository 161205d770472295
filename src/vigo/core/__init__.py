"""Pure decisions: render, plan, lint, policy, health, rollout, trust (no adapter imported)."""
