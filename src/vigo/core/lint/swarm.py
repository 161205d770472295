"""Family swarm: Compose keys that Docker Swarm ignores or refuses, for stacks that name
`x-vigo.engine: swarm` (the rule itself lives with the Swarm model, core/swarm.py)."""

from vigo.core import swarm
from vigo.core.lint.base import describe, stack_rule

IDS = describe(swarm.RULES)
stack_rule(swarm.lint_rule)
