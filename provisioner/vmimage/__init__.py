"""Base VM images for the local qemu cloud: build one with mmdebstrap, or accept a user's cloud image."""
from .spec import DEFAULT_CACHE, ImageSpec, default_cache_dir
from .image import VmImage, find_image, open_image

__all__ = ["DEFAULT_CACHE", "ImageSpec", "VmImage", "default_cache_dir", "find_image", "open_image"]
