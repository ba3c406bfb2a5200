"""The operator side of reaching a host: SSH with the host key verified against the console
(a Runner like the local one), agent delivery, and image push. Nothing on a host imports this
package; the agent installs without paramiko.
"""
