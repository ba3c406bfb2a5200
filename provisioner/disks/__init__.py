"""Disk discovery, planning and application (btrfs on ephemeral and attached disks)."""
