"""Images: references, the registry client, the btrfs layer store, and loading image layouts."""
