"""Open-world head: rejecting what is none of the classes with what the ImageNet backbone knows."""
