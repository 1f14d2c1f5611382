"""Tool policy: kept as a name for :mod:`erpoz.policy`, where the rules for tools, models and
data live together."""

from ..policy import Action, Policy, Rule, ToolPolicy, load_policy, parse_policy

__all__ = ["Action", "Policy", "Rule", "ToolPolicy", "load_policy", "parse_policy"]
