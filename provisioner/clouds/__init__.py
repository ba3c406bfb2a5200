"""Cloud drivers (AWS EC2, GCE, local qemu) on apache-libcloud."""
