"""The host's series: facts (cgroups.py: a container's cgroup in v1, hybrid or v2; node.py: /proc;
collect.py: one snapshot of the host and its containers), pure views of them (exposition.py:
Prometheus text and Graphite lines with node_exporter/cAdvisor names; stats.py: docker stats'
columns), and the agent's outlets (server.py: the HTTP endpoint; graphite.py: the push).

It sits under host/ (the agent runs it) and over compose/ and containers/ (whose records,
supervisor files and stack states it reads); it runs no command, only reads files."""
