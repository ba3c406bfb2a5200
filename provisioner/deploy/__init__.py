"""`provision deploy`: launch or reuse hosts, deliver the agent, prepare them, bring the stack up."""
