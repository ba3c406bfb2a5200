"""The on-host agent: boot hook and host preparation."""
